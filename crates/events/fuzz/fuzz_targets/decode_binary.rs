//! Fuzzes the binary record decoder: any bytes must decode or fail cleanly, and whatever
//! decodes must re-encode to the same bytes (the encoding is canonical).
#![no_main]

use clickpulse_events::binary;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = binary::decode(data) {
        let mut again = Vec::new();
        binary::encode(&event, &mut again);
        assert_eq!(again, data);
    }
});
