//! Property tests of the binary record encoding.

mod common;

use clickpulse_events::ClickEvent;
use clickpulse_events::binary::{self, DecodeError};
use proptest::prelude::*;

fn encoded(event: &clickpulse_events::ClickEvent) -> Vec<u8> {
    let mut buf = Vec::new();
    binary::encode(event, &mut buf);
    buf
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_event_round_trips(event in common::event()) {
        let bytes = encoded(&event);
        prop_assert_eq!(bytes.len(), binary::encoded_len(&event));
        prop_assert_eq!(bytes[0], binary::VERSION);
        prop_assert_eq!(binary::decode(&bytes), Ok(event));
    }

    #[test]
    fn a_page_view_encodes_as_its_event_does(ts in any::<u64>(), visitor in ".{0,40}", url in ".{0,200}") {
        let mut direct = Vec::new();
        binary::encode_page_view(ts, &visitor, &url, &mut direct);
        prop_assert_eq!(direct, encoded(&ClickEvent::page_view(ts, visitor, url)));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_decode_canonically(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(event) = binary::decode(&bytes) {
            prop_assert_eq!(encoded(&event), bytes);
        }
    }

    #[test]
    fn versioned_arbitrary_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let bytes = [&[binary::VERSION][..], &tail].concat();
        if let Ok(event) = binary::decode(&bytes) {
            prop_assert_eq!(encoded(&event), bytes);
        }
    }

    #[test]
    fn corrupted_records_decode_canonically_or_fail(
        event in common::event(),
        position in any::<prop::sample::Index>(),
        mask in 1u8..,
    ) {
        let mut bytes = encoded(&event);
        let at = position.index(bytes.len());
        bytes[at] ^= mask;
        match binary::decode(&bytes) {
            Ok(decoded) => prop_assert_eq!(encoded(&decoded), bytes),
            Err(DecodeError::Empty) => prop_assert!(false, "non-empty input reported empty"),
            Err(_) => {}
        }
    }

    #[test]
    fn records_concatenated_are_rejected_as_trailing(a in common::event(), b in common::event()) {
        let first = encoded(&a);
        let bytes = [first.clone(), encoded(&b)].concat();
        prop_assert_eq!(
            binary::decode(&bytes),
            Err(DecodeError::TrailingBytes { count: bytes.len() - first.len() })
        );
    }
}
