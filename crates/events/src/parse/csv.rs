//! CSV as in the Spark PageViewsCount example: `ip,timestamp_ms,url,ip`.
//!
//! The visitor is the first ip; the last field is required but not used. Fields may be quoted
//! as in RFC 4180 (`"a,b"`, with `""` for a quote inside); a quote inside an unquoted field is
//! an ordinary character.

use std::borrow::Cow;

use super::{LineError, page_view, parse_ts, utf8};
use crate::{ClickEvent, LineFormat};

/// Parses one CSV line (no terminator, not blank).
pub(super) fn parse(line: &[u8]) -> Result<ClickEvent, LineError> {
    let line = utf8(line)?;
    if memchr::memchr(b'"', line.as_bytes()).is_none() {
        let mut fields = line.split(',');
        match (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) {
            (Some(ip), Some(ts), Some(url), Some(_), None) => page_view(parse_ts(ts)?, ip, url),
            _ => Err(field_count(line.split(',').count())),
        }
    } else {
        match quoted_fields(line)?.as_slice() {
            [ip, ts, url, _] => page_view(parse_ts(ts)?, ip, url),
            other => Err(field_count(other.len())),
        }
    }
}

fn field_count(found: usize) -> LineError {
    LineError::FieldCount {
        format: LineFormat::Csv,
        expected: "4",
        found,
    }
}

/// Splits a line that contains quotes into its fields, unquoting the quoted ones.
fn quoted_fields(mut rest: &str) -> Result<Vec<Cow<'_, str>>, LineError> {
    let mut fields = Vec::with_capacity(4);
    loop {
        let field = fields.len() + 1;
        let Some(quoted) = rest.strip_prefix('"') else {
            match rest.split_once(',') {
                Some((value, next)) => {
                    fields.push(Cow::Borrowed(value));
                    rest = next;
                    continue;
                }
                None => {
                    fields.push(Cow::Borrowed(rest));
                    return Ok(fields);
                }
            }
        };
        let (value, after) = unquote(quoted).ok_or(LineError::UnterminatedQuote { field })?;
        fields.push(value);
        if after.is_empty() {
            return Ok(fields);
        }
        rest = after
            .strip_prefix(',')
            .ok_or(LineError::TextAfterQuote { field })?;
    }
}

/// Reads a quoted field's value from just after its opening quote: returns the value and the
/// text after the closing quote, or `None` if the quote is never closed.
fn unquote(mut rest: &str) -> Option<(Cow<'_, str>, &str)> {
    let mut value = String::new();
    loop {
        let (chunk, after) = rest.split_once('"')?;
        match after.strip_prefix('"') {
            Some(next) => {
                value.push_str(chunk);
                value.push('"');
                rest = next;
            }
            None if value.is_empty() => return Some((Cow::Borrowed(chunk), after)),
            None => {
                value.push_str(chunk);
                return Some((Cow::Owned(value), after));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spark_layout_uses_first_ip_as_visitor() {
        let e = parse(b"10.0.0.1,938476800000,/news,10.0.0.2").expect("valid line");
        assert_eq!(
            e,
            ClickEvent::page_view(938_476_800_000, "10.0.0.1", "/news")
        );
    }

    #[test]
    fn wrong_field_counts_are_rejected() {
        assert_eq!(parse(b"10.0.0.1,1,/news"), Err(field_count(3)));
        assert_eq!(parse(b"10.0.0.1,1,/news,ip,x"), Err(field_count(5)));
        assert_eq!(parse(b"just-one"), Err(field_count(1)));
        assert_eq!(parse(br#""a",1,/news"#), Err(field_count(3)));
    }

    #[test]
    fn quoted_fields_may_hold_commas_and_quotes() {
        let e = parse(br#""10.0.0.1",5,"/search?q=a,b ""c""",10.0.0.1"#).expect("valid line");
        assert_eq!(e.visitor_id, "10.0.0.1");
        assert_eq!(e.url, r#"/search?q=a,b "c""#);
        assert_eq!(e.ts_ms, 5);
    }

    #[test]
    fn quoted_empty_last_field_is_a_field() {
        let e = parse(br#"ip,5,/u,"""#).expect("valid line");
        assert_eq!(e.url, "/u");
    }

    #[test]
    fn quote_inside_unquoted_field_is_literal() {
        let e = parse(br#"ip,5,/a"b,ip"#).expect("valid line");
        assert_eq!(e.url, r#"/a"b"#);
    }

    #[test]
    fn unterminated_quote_names_its_field() {
        assert_eq!(
            parse(br#"ip,5,"/news,ip"#),
            Err(LineError::UnterminatedQuote { field: 3 })
        );
    }

    #[test]
    fn text_after_closing_quote_names_its_field() {
        assert_eq!(
            parse(br#""ip"x,5,/news,ip"#),
            Err(LineError::TextAfterQuote { field: 1 })
        );
    }

    #[test]
    fn bad_timestamp_and_empty_fields_are_rejected() {
        assert!(matches!(
            parse(b"ip,yesterday,/u,ip"),
            Err(LineError::InvalidTimestamp { .. })
        ));
        assert_eq!(
            parse(b",5,/u,ip"),
            Err(LineError::EmptyField {
                field: "visitor_id"
            })
        );
        assert_eq!(
            parse(br#"ip,5,"",ip"#),
            Err(LineError::EmptyField { field: "url" })
        );
    }

    #[test]
    fn non_utf8_is_rejected() {
        assert_eq!(
            parse(b"\xff,5,/u,ip"),
            Err(LineError::InvalidUtf8 { column: 1 })
        );
    }
}
