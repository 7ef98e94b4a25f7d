//! Unique names for per-test resources.

use rand::Rng;

/// Longest name [`unique_name`] returns; keeps names readable and far below the limits of
/// MongoDB database names (63 bytes) and NATS subject tokens.
const MAX_LEN: usize = 40;
/// Number of random characters appended to every name.
const RANDOM_LEN: usize = 8;
/// Characters allowed in the random suffix.
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// Returns a fresh, unique name for a test resource, e.g. `t_rooms_join_k3j9x2q1`.
///
/// Tests share one NATS server and one MongoDB server per test binary (see
/// [`nats_url`](crate::nats_url)), so they isolate themselves by name: one subject prefix
/// and one database per test. The name is `"t_"`, the sanitized `tag`, `"_"` and eight
/// random lower-case letters/digits. It contains only `[a-z0-9_]`, starts with a letter
/// and is at most 40 characters long, which makes it valid both as a NATS subject token
/// and as a MongoDB database name. `tag` is lower-cased, every other character becomes
/// `_` (runs collapsed) and it is truncated to fit; it is only there to make logs
/// readable, uniqueness comes from the random suffix.
pub fn unique_name(tag: &str) -> String {
    // "t_" + tag + "_" + random
    let max_tag = MAX_LEN - 2 - 1 - RANDOM_LEN;
    let tag = sanitize(tag, max_tag);
    let mut rng = rand::rng();
    let suffix: String = (0..RANDOM_LEN)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    if tag.is_empty() {
        format!("t_{suffix}")
    } else {
        format!("t_{tag}_{suffix}")
    }
}

/// Maps `tag` to `[a-z0-9_]`, collapses runs of `_`, trims `_` at both ends and truncates
/// to `max` characters.
fn sanitize(tag: &str, max: usize) -> String {
    let mut out = String::with_capacity(tag.len().min(max));
    for c in tag.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '_'
        };
        if c == '_' && (out.is_empty() || out.ends_with('_')) {
            continue;
        }
        out.push(c);
    }
    out.truncate(max);
    while out.ends_with('_') {
        out.pop();
    }
    out
}
