//! Lenient deserializers shared by the TOML file and the environment layer.

use std::fmt;
use std::net::SocketAddr;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use crate::Secret;

/// An optional string where an empty (or blank) value means `None`, so that `MONGO_URI=`
/// unsets the value rather than configuring an empty URI.
pub(crate) fn optional_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let value = Option::<String>::deserialize(d)?;
    Ok(value.filter(|text| !text.trim().is_empty()))
}

/// An optional secret, with [`optional_text`]'s rule that blank means `None` (so that
/// `COOKIE_SECRET=` counts as missing, which production refuses).
pub(crate) fn optional_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Ok(optional_text(d)?.map(Secret::from))
}

/// An optional socket address written as text (`0.0.0.0:9091`); empty means `None`.
pub(crate) fn optional_socket_addr<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    optional_text(d)?
        .map(|text| {
            text.trim().parse().map_err(|err| {
                de::Error::custom(format!(
                    "invalid socket address {text:?} ({err}), expected host-ip:port"
                ))
            })
        })
        .transpose()
}

/// A list of strings given either as one comma-separated string or as a sequence; blank
/// items are dropped and the others trimmed.
pub(crate) fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    d.deserialize_any(ListVisitor)
}

struct ListVisitor;

impl<'de> Visitor<'de> for ListVisitor {
    type Value = Vec<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a comma-separated string or a list of strings")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
        Ok(clean(text.split(',')))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<String>()? {
            items.push(item);
        }
        Ok(clean(items.iter().map(String::as_str)))
    }
}

fn clean<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    items
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}
