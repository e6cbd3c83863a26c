//! The line formats: one click event per line of TSV, CSV or NDJSON.
//!
//! [`parse_line`] parses one line; [`LineParser`] reads lines from any [`BufRead`](std::io::BufRead)
//! and [`parse_slice`] from a byte slice in memory, both yielding one
//! `Result<ClickEvent, ParseError>` per non-blank line so that a bad line never stops the stream.
//!
//! Rules shared by every line format:
//! - a line ends at `\n`; one `\r` before it is dropped (CRLF files read like LF files);
//! - blank lines (nothing, or only spaces, tabs and `\r`) are skipped, but still counted in
//!   line numbers and offsets;
//! - a UTF-8 byte-order mark at the start of the input is skipped;
//! - a line longer than [`ParseOptions::max_line_len`] is rejected as
//!   [`LineError::TooLong`] without being held in memory whole;
//! - `visitor_id` and `url` must not be empty; fields are not trimmed.

mod csv;
mod error;
mod ndjson;
mod reader;
mod tsv;

pub use error::{LineError, ParseError};
pub use reader::{LineParser, SliceParser, parse_slice};

use crate::{ClickEvent, LineFormat};

/// How lines are parsed. Build it with [`ParseOptions::default`] and the `with_` setters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    /// The event time given to TSV lines without a timestamp (`visitor_id<TAB>url`), in ms
    /// since the Unix epoch. Default = `None`: such lines are rejected with
    /// [`LineError::MissingTimestamp`].
    pub default_ts_ms: Option<u64>,
    /// The longest line accepted, in bytes, not counting its `\r\n` or `\n`.
    /// Default = [`ParseOptions::DEFAULT_MAX_LINE_LEN`] (1 MiB).
    pub max_line_len: usize,
}

impl ParseOptions {
    /// The default maximum line length: 1 MiB.
    pub const DEFAULT_MAX_LINE_LEN: usize = 1 << 20;

    /// Sets the timestamp of TSV lines that have none. Default = none (such lines are errors).
    pub fn with_default_ts_ms(mut self, ts_ms: u64) -> Self {
        self.default_ts_ms = Some(ts_ms);
        self
    }

    /// Sets the longest line accepted, in bytes. Default = 1 MiB.
    pub fn with_max_line_len(mut self, max_line_len: usize) -> Self {
        self.max_line_len = max_line_len;
        self
    }
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            default_ts_ms: None,
            max_line_len: Self::DEFAULT_MAX_LINE_LEN,
        }
    }
}

/// Parses one line in `format`. A trailing `\n` or `\r\n` is allowed and ignored.
///
/// # Errors
/// [`LineError::Blank`] for a blank line (which the readers skip instead),
/// [`LineError::EmbeddedNewline`] if `line` holds a `\n` before its end, and any other
/// [`LineError`] that says why the line is not a click event of `format`.
///
/// # Examples
/// ```
/// use clickpulse_events::{parse_line, LineError, LineFormat, ParseOptions};
/// let opts = ParseOptions::default().with_default_ts_ms(1_000);
///
/// let e = parse_line(LineFormat::Tsv, b"v1\t/news\r\n", &opts)?;
/// assert_eq!((e.ts_ms, e.visitor_id.as_str(), e.url.as_str()), (1_000, "v1", "/news"));
///
/// let e = parse_line(LineFormat::Csv, b"10.0.0.1,1500,/sports,10.0.0.1", &opts)?;
/// assert_eq!((e.ts_ms, e.visitor_id.as_str()), (1_500, "10.0.0.1"));
///
/// let bad = parse_line(LineFormat::Tsv, b"x\tv1\t/news", &opts);
/// assert!(matches!(bad, Err(LineError::InvalidTimestamp { .. })));
/// # Ok::<(), LineError>(())
/// ```
pub fn parse_line(
    format: LineFormat,
    line: &[u8],
    options: &ParseOptions,
) -> Result<ClickEvent, LineError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    if memchr::memchr(b'\n', line).is_some() {
        return Err(LineError::EmbeddedNewline);
    }
    let content = trim_cr(line);
    if is_blank(content) {
        return Err(LineError::Blank);
    }
    if content.len() > options.max_line_len {
        return Err(LineError::TooLong {
            max: options.max_line_len,
        });
    }
    parse_content(format, content, options)
}

/// Parses a line already cut from its terminator, known not to be blank or too long.
fn parse_content(
    format: LineFormat,
    content: &[u8],
    options: &ParseOptions,
) -> Result<ClickEvent, LineError> {
    match format {
        LineFormat::Tsv => tsv::parse(content, options.default_ts_ms),
        LineFormat::Csv => csv::parse(content),
        LineFormat::Ndjson => ndjson::parse(content),
    }
}

/// The line without one trailing `\r`.
fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Whether the line holds nothing but spaces, tabs and carriage returns.
fn is_blank(line: &[u8]) -> bool {
    line.iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'))
}

/// The line as text, or where its first non-UTF-8 byte is.
fn utf8(line: &[u8]) -> Result<&str, LineError> {
    std::str::from_utf8(line).map_err(|e| LineError::InvalidUtf8 {
        column: e.valid_up_to() + 1,
    })
}

/// A decimal `ts_ms` field: ASCII digits only, no sign, no spaces, at most `u64::MAX`.
fn parse_ts(field: &str) -> Result<u64, LineError> {
    if field.is_empty() {
        return Err(LineError::EmptyField { field: "ts_ms" });
    }
    let mut value: u64 = 0;
    for &byte in field.as_bytes() {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return Err(invalid_ts(field, "not a decimal integer"));
        }
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(digit)))
            .ok_or_else(|| invalid_ts(field, "out of range for u64 milliseconds"))?;
    }
    Ok(value)
}

fn invalid_ts(field: &str, why: &'static str) -> LineError {
    LineError::InvalidTimestamp {
        value: field.chars().take(32).collect(),
        why,
    }
}

/// A page view, after checking that its required text fields are not empty.
fn page_view(ts_ms: u64, visitor_id: &str, url: &str) -> Result<ClickEvent, LineError> {
    if visitor_id.is_empty() {
        return Err(LineError::EmptyField {
            field: "visitor_id",
        });
    }
    if url.is_empty() {
        return Err(LineError::EmptyField { field: "url" });
    }
    Ok(ClickEvent::page_view(ts_ms, visitor_id, url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_in_full_u64_range() {
        assert_eq!(parse_ts("0"), Ok(0));
        assert_eq!(parse_ts("938476800000"), Ok(938_476_800_000));
        assert_eq!(parse_ts("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_ts("000123"), Ok(123));
    }

    #[test]
    fn timestamp_overflow_is_out_of_range() {
        let err = parse_ts("18446744073709551616");
        assert!(
            matches!(err, Err(LineError::InvalidTimestamp { why, .. }) if why.contains("range"))
        );
    }

    #[test]
    fn timestamp_with_sign_space_or_letters_is_not_decimal() {
        for bad in ["-1", "+1", " 1", "1 ", "1.5", "1e3", "abc", "１"] {
            let err = parse_ts(bad);
            assert!(
                matches!(&err, Err(LineError::InvalidTimestamp { why, .. }) if why.contains("decimal")),
                "{bad:?} gave {err:?}"
            );
        }
    }

    #[test]
    fn empty_timestamp_is_an_empty_field() {
        assert_eq!(parse_ts(""), Err(LineError::EmptyField { field: "ts_ms" }));
    }

    #[test]
    fn invalid_timestamp_value_is_cut_to_32_chars() {
        let long = "x".repeat(100);
        match parse_ts(&long) {
            Err(LineError::InvalidTimestamp { value, .. }) => assert_eq!(value.len(), 32),
            other => panic!("expected InvalidTimestamp, got {other:?}"),
        }
    }

    #[test]
    fn blank_lines_are_rejected_by_parse_line() {
        let opts = ParseOptions::default();
        for blank in [&b""[..], b"\n", b"\r\n", b"  \t \r\n"] {
            assert_eq!(
                parse_line(LineFormat::Tsv, blank, &opts),
                Err(LineError::Blank)
            );
        }
    }

    #[test]
    fn several_lines_are_not_one_line() {
        let opts = ParseOptions::default();
        assert_eq!(
            parse_line(LineFormat::Tsv, b"1\tv\t/a\n2\tv\t/b\n", &opts),
            Err(LineError::EmbeddedNewline)
        );
        assert_eq!(
            parse_line(LineFormat::Ndjson, b"\n{}", &opts),
            Err(LineError::EmbeddedNewline)
        );
    }

    #[test]
    fn parse_line_enforces_max_len_without_terminator() {
        let opts = ParseOptions::default().with_max_line_len(10);
        // 10 bytes of content plus CRLF fit; 11 do not.
        assert!(parse_line(LineFormat::Tsv, b"1\tv\t/abcde\r\n", &opts).is_ok());
        assert_eq!(
            parse_line(LineFormat::Tsv, b"1\tv\t/abcdef\r\n", &opts),
            Err(LineError::TooLong { max: 10 })
        );
    }

    #[test]
    fn invalid_utf8_reports_its_column() {
        assert_eq!(utf8(b"ab\xffcd"), Err(LineError::InvalidUtf8 { column: 3 }));
    }
}
