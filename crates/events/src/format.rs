//! The names of the input formats, as they appear in configuration and on the command line.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// An input format of click events.
///
/// Parsed from its lower-case name (`"tsv"`, `"csv"`, `"ndjson"`, `"msnbc"`); [`fmt::Display`]
/// prints the same name back.
///
/// The first three are line formats (one event per line, see [`LineFormat`] and
/// [`LineParser`](crate::LineParser)); the MSNBC sequence file is not, because its events take
/// their timestamps from the position of the line in the whole file (see [`crate::msnbc`]).
///
/// # Examples
/// ```
/// use clickpulse_events::{Format, LineFormat};
/// let f: Format = "ndjson".parse()?;
/// assert_eq!(f.line_format(), Some(LineFormat::Ndjson));
/// assert_eq!("msnbc".parse::<Format>()?.line_format(), None);
/// assert!("xml".parse::<Format>().is_err());
/// # Ok::<(), clickpulse_events::UnknownFormat>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `visitor_id<TAB>url` or `ts_ms<TAB>visitor_id<TAB>url`, chosen per line by field count.
    Tsv,
    /// `ip,timestamp_ms,url,ip` (the Spark PageViewsCount layout); the visitor is the first ip.
    Csv,
    /// One JSON [`ClickEvent`](crate::ClickEvent) object per line; other fields become
    /// properties (see the [crate docs](crate#line-formats)).
    Ndjson,
    /// The UCI MSNBC sequence file, replayed by the canonical mapping of [`crate::msnbc`].
    Msnbc,
}

/// A format with one event per line: the formats a [`LineParser`](crate::LineParser) reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LineFormat {
    /// See [`Format::Tsv`].
    Tsv,
    /// See [`Format::Csv`].
    Csv,
    /// See [`Format::Ndjson`].
    Ndjson,
}

/// A format name that is not one of `tsv`, `csv`, `ndjson`, `msnbc`.
///
/// The caller must fix its configuration; retrying cannot help.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown input format {0:?} (expected one of: tsv, csv, ndjson, msnbc)")]
pub struct UnknownFormat(pub String);

impl Format {
    /// Every format, in the order of its documentation.
    pub const ALL: [Format; 4] = [Format::Tsv, Format::Csv, Format::Ndjson, Format::Msnbc];

    /// The lower-case name that [`FromStr`] accepts.
    pub fn name(self) -> &'static str {
        match self {
            Format::Tsv => "tsv",
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
            Format::Msnbc => "msnbc",
        }
    }

    /// The line format this is, or `None` for [`Format::Msnbc`], which is not line-oriented.
    pub fn line_format(self) -> Option<LineFormat> {
        match self {
            Format::Tsv => Some(LineFormat::Tsv),
            Format::Csv => Some(LineFormat::Csv),
            Format::Ndjson => Some(LineFormat::Ndjson),
            Format::Msnbc => None,
        }
    }
}

impl LineFormat {
    /// The lower-case name of the format.
    pub fn name(self) -> &'static str {
        Format::from(self).name()
    }
}

impl From<LineFormat> for Format {
    fn from(f: LineFormat) -> Self {
        match f {
            LineFormat::Tsv => Format::Tsv,
            LineFormat::Csv => Format::Csv,
            LineFormat::Ndjson => Format::Ndjson,
        }
    }
}

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| UnknownFormat(s.to_owned()))
    }
}

impl FromStr for LineFormat {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<Format>()?
            .line_format()
            .ok_or_else(|| UnknownFormat(s.to_owned()))
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for LineFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips() {
        for f in Format::ALL {
            assert_eq!(f.name().parse::<Format>(), Ok(f));
            assert_eq!(f.to_string(), f.name());
        }
    }

    #[test]
    fn unknown_and_wrong_case_names_are_rejected() {
        assert_eq!("TSV".parse::<Format>(), Err(UnknownFormat("TSV".into())));
        assert_eq!("".parse::<Format>(), Err(UnknownFormat(String::new())));
        assert_eq!("json".parse::<Format>(), Err(UnknownFormat("json".into())));
    }

    #[test]
    fn msnbc_is_not_a_line_format() {
        assert_eq!(
            "msnbc".parse::<LineFormat>(),
            Err(UnknownFormat("msnbc".into()))
        );
        assert_eq!("csv".parse::<LineFormat>(), Ok(LineFormat::Csv));
        assert_eq!(Format::from(LineFormat::Ndjson), Format::Ndjson);
        assert_eq!(LineFormat::Tsv.to_string(), "tsv");
    }
}
