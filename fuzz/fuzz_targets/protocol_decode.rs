//! Protocol decoding on arbitrary input: client frames, server frames, tokens and admin bodies must never
//! panic, and whatever parses must serialize and parse back to the same value.
#![no_main]

use homeroom_shared::auth::TokenKey;
use homeroom_shared::protocol::{parse_client_frame, ServerFrame};
use homeroom_shared::room::config::SettingsPatch;
use homeroom_shared::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(frame) = parse_client_frame(&text) {
        let again = parse_client_frame(&frame.to_json()).expect("a parsed frame re-parses");
        assert_eq!(again, frame);
    }
    if let Ok(frame) = serde_json::from_str::<ServerFrame>(&text) {
        let again: ServerFrame = serde_json::from_str(&frame.to_json()).expect("a server frame re-parses");
        assert_eq!(again, frame);
    }
    let _ = serde_json::from_str::<SettingsPatch>(&text);
    let key = TokenKey::new(b"fuzz-secret");
    let _ = key.verify_user(&text, Timestamp(1_700_000_000_000));
    let _ = key.verify_media(&text, Timestamp(1_700_000_000_000));
    let _ = key.verify_service(&text, Timestamp(1_700_000_000_000));
});
