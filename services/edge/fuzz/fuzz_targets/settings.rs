//! Fuzz target `settings`: arbitrary bytes as the JSON body of `PUT /rooms/:code`
//! (`{"settings": {...}}`, as the edge reads it) and as a bare settings patch, merged into
//! the defaults. A merge that succeeds keeps every limit, and merging the same patch again
//! changes nothing.

#![no_main]

use libfuzzer_sys::fuzz_target;
use p2piano_edge::SettingsBody;
use p2piano_edge::protocol::validate::{MAX_PARTICIPANTS_LIMIT, ROOM_NAME_MAX};
use p2piano_edge::protocol::{RoomSettings, SettingsPatch};

fn check(patch: &SettingsPatch) {
    let base = RoomSettings::default();
    if let Ok(next) = base.apply(patch) {
        assert!((1..=MAX_PARTICIPANTS_LIMIT).contains(&next.max_participants));
        if let Some(name) = &next.name {
            assert!(
                !name.is_empty() && name.chars().count() <= ROOM_NAME_MAX,
                "{name:?}"
            );
            assert!(!name.chars().any(char::is_control), "{name:?}");
        }
        assert_eq!(next.apply(patch).as_ref(), Ok(&next));
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = serde_json::from_slice::<SettingsBody>(data)
        && let Some(patch) = &body.settings
    {
        check(patch);
    }
    if let Ok(patch) = serde_json::from_slice::<SettingsPatch>(data) {
        check(&patch);
    }
});
