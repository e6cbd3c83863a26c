//! TSV: `visitor_id<TAB>url` or `ts_ms<TAB>visitor_id<TAB>url`, chosen per line by field count.

use super::{LineError, page_view, parse_ts, utf8};
use crate::{ClickEvent, LineFormat};

/// Parses one TSV line (no terminator, not blank). Two-field lines take `default_ts_ms`.
pub(super) fn parse(line: &[u8], default_ts_ms: Option<u64>) -> Result<ClickEvent, LineError> {
    let line = utf8(line)?;
    let mut fields = line.split('\t');
    match (fields.next(), fields.next(), fields.next(), fields.next()) {
        (Some(visitor_id), Some(url), None, None) => {
            let ts_ms = default_ts_ms.ok_or(LineError::MissingTimestamp)?;
            page_view(ts_ms, visitor_id, url)
        }
        (Some(ts), Some(visitor_id), Some(url), None) => page_view(parse_ts(ts)?, visitor_id, url),
        _ => Err(LineError::FieldCount {
            format: LineFormat::Tsv,
            expected: "2 or 3",
            found: line.split('\t').count(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_count(found: usize) -> LineError {
        LineError::FieldCount {
            format: LineFormat::Tsv,
            expected: "2 or 3",
            found,
        }
    }

    #[test]
    fn three_fields_carry_their_timestamp() {
        let e = parse(b"938476800000\tv0\t/frontpage", Some(1)).expect("valid line");
        assert_eq!(
            e,
            ClickEvent::page_view(938_476_800_000, "v0", "/frontpage")
        );
    }

    #[test]
    fn two_fields_take_the_default_timestamp() {
        let e = parse(b"v7\t/news", Some(42)).expect("valid line");
        assert_eq!(e, ClickEvent::page_view(42, "v7", "/news"));
    }

    #[test]
    fn two_fields_without_default_are_missing_timestamp() {
        assert_eq!(parse(b"v7\t/news", None), Err(LineError::MissingTimestamp));
    }

    #[test]
    fn one_or_four_fields_are_field_count_errors() {
        assert_eq!(parse(b"v7 /news", Some(1)), Err(field_count(1)));
        assert_eq!(parse(b"1\tv\t/u\textra", Some(1)), Err(field_count(4)));
        assert_eq!(parse(b"1\tv\t/u\t\t\t", Some(1)), Err(field_count(6)));
    }

    #[test]
    fn empty_visitor_or_url_is_rejected() {
        assert_eq!(
            parse(b"1\t\t/u", None),
            Err(LineError::EmptyField {
                field: "visitor_id"
            })
        );
        assert_eq!(
            parse(b"1\tv\t", None),
            Err(LineError::EmptyField { field: "url" })
        );
        assert_eq!(
            parse(b"\t/u", Some(1)),
            Err(LineError::EmptyField {
                field: "visitor_id"
            })
        );
    }

    #[test]
    fn bad_timestamp_is_rejected() {
        assert!(matches!(
            parse(b"soon\tv\t/u", None),
            Err(LineError::InvalidTimestamp { .. })
        ));
        assert_eq!(
            parse(b"\tv\t/u", None),
            Err(LineError::EmptyField { field: "ts_ms" })
        );
    }

    #[test]
    fn non_utf8_is_rejected() {
        assert_eq!(
            parse(b"1\tv\t/caf\xe9", None),
            Err(LineError::InvalidUtf8 { column: 9 })
        );
    }

    #[test]
    fn fields_are_not_trimmed_and_may_hold_unicode() {
        let e = parse(b"5\t v \t/caf\xc3\xa9 ", None).expect("valid line");
        assert_eq!(e.visitor_id, " v ");
        assert_eq!(e.url, "/café ");
    }
}
