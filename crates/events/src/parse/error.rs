//! Why a line was rejected, and where it was.

use std::io;

use thiserror::Error;

use crate::LineFormat;

/// Why one line is not a click event. It carries no position: [`ParseError`] adds that.
///
/// Every variant is a property of the line's bytes: re-reading the line cannot help, so the
/// caller counts the line and sends it to its dead-letter output.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum LineError {
    /// The line is empty or holds only spaces, tabs and a carriage return.
    #[error("blank line")]
    Blank,
    /// The bytes given to [`parse_line`](crate::parse_line) hold a `\n` before their end:
    /// they are several lines, not one.
    #[error("more than one line (a \\n before the end)")]
    EmbeddedNewline,
    /// The line is longer than the configured maximum; its excess bytes were skipped unread.
    #[error("line longer than {max} bytes")]
    TooLong {
        /// The maximum line length in bytes, without the line terminator.
        max: usize,
    },
    /// The line (TSV, CSV) is not UTF-8.
    #[error("not valid UTF-8 (first bad byte at column {column})")]
    InvalidUtf8 {
        /// The 1-based byte column of the first byte that is not UTF-8.
        column: usize,
    },
    /// The line has the wrong number of fields for its format.
    #[error("{format} line has {found} fields, expected {expected}")]
    FieldCount {
        /// The format the line was read as.
        format: LineFormat,
        /// The field counts the format accepts, in words (`"2 or 3"`, `"4"`).
        expected: &'static str,
        /// The number of fields the line has.
        found: usize,
    },
    /// A required field is empty.
    #[error("empty {field}")]
    EmptyField {
        /// The name of the field (`visitor_id`, `url`, `ts_ms`).
        field: &'static str,
    },
    /// The timestamp field is not a decimal number of milliseconds that fits in a `u64`.
    #[error("invalid ts_ms {value:?}: {why}")]
    InvalidTimestamp {
        /// The field's text, cut to its first 32 characters.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A `visitor_id<TAB>url` line was read but the caller supplied no default timestamp.
    #[error("2-field TSV line has no ts_ms and no default_ts_ms was given")]
    MissingTimestamp,
    /// A CSV field opens a quote that the line never closes.
    #[error("CSV field {field} has an unterminated quote")]
    UnterminatedQuote {
        /// The 1-based index of the field.
        field: usize,
    },
    /// A quoted CSV field is followed by something other than a comma or the end of the line.
    #[error("CSV field {field} has text after its closing quote")]
    TextAfterQuote {
        /// The 1-based index of the field.
        field: usize,
    },
    /// The NDJSON line is not JSON, not an object, or has a field of the wrong type; the
    /// message says which and where (column within the line).
    #[error("invalid JSON event: {message}")]
    Json {
        /// The reason, with the column where it was found.
        message: String,
    },
}

/// A line that could not be read or parsed, with its position in the input.
///
/// `line` is 1-based and counts every line, blank ones included; `offset` is the byte offset
/// of the start of the line from the start of the input.
///
/// [`ParseError::Malformed`] concerns one line: the stream goes on after it.
/// [`ParseError::Io`] ends the stream: the reader failed, and whether retrying helps depends
/// on the reader (see [`ParseError::is_fatal`]).
#[derive(Debug, Error)]
pub enum ParseError {
    /// The line's bytes are not a click event; send it to the dead-letter output.
    #[error("line {line} (byte {offset}): {reason}")]
    Malformed {
        /// The 1-based line number.
        line: u64,
        /// The byte offset of the start of the line.
        offset: u64,
        /// Why the line is not a click event.
        reason: LineError,
    },
    /// The underlying reader failed while reading this line; the stream ends here.
    #[error("line {line} (byte {offset}): read failed: {source}")]
    Io {
        /// The 1-based number of the line being read.
        line: u64,
        /// The byte offset of the start of the line being read.
        offset: u64,
        /// The reader's error.
        #[source]
        source: io::Error,
    },
}

impl ParseError {
    /// The 1-based line number.
    pub fn line(&self) -> u64 {
        match self {
            ParseError::Malformed { line, .. } | ParseError::Io { line, .. } => *line,
        }
    }

    /// The byte offset of the start of the line.
    pub fn offset(&self) -> u64 {
        match self {
            ParseError::Malformed { offset, .. } | ParseError::Io { offset, .. } => *offset,
        }
    }

    /// Why the line is malformed, or `None` for a read failure.
    pub fn reason(&self) -> Option<&LineError> {
        match self {
            ParseError::Malformed { reason, .. } => Some(reason),
            ParseError::Io { .. } => None,
        }
    }

    /// `true` when the stream cannot go on (a read failure); `false` for a malformed line,
    /// which the caller dead-letters before reading on.
    pub fn is_fatal(&self) -> bool {
        matches!(self, ParseError::Io { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_error_reports_position_and_reason() {
        let e = ParseError::Malformed {
            line: 3,
            offset: 42,
            reason: LineError::EmptyField { field: "url" },
        };
        assert_eq!((e.line(), e.offset()), (3, 42));
        assert_eq!(e.reason(), Some(&LineError::EmptyField { field: "url" }));
        assert!(!e.is_fatal());
        assert_eq!(e.to_string(), "line 3 (byte 42): empty url");
    }

    #[test]
    fn io_error_is_fatal_and_has_no_reason() {
        let e = ParseError::Io {
            line: 7,
            offset: 100,
            source: io::Error::other("disk on fire"),
        };
        assert!(e.is_fatal());
        assert_eq!(e.reason(), None);
        assert_eq!((e.line(), e.offset()), (7, 100));
        assert_eq!(
            e.to_string(),
            "line 7 (byte 100): read failed: disk on fire"
        );
    }

    #[test]
    fn field_count_message_names_the_format() {
        let e = LineError::FieldCount {
            format: LineFormat::Csv,
            expected: "4",
            found: 2,
        };
        assert_eq!(e.to_string(), "csv line has 2 fields, expected 4");
    }
}
