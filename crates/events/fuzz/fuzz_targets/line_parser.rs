//! The check every line-parser fuzz target runs: any bytes, as one line or as a stream of lines,
//! must parse or fail cleanly, and the streaming and in-memory readers must agree.

use std::io::BufReader;

use clickpulse_events::{LineFormat, LineParser, ParseOptions, parse_line, parse_slice};

pub fn check(format: LineFormat, data: &[u8]) {
    let options = ParseOptions::default()
        .with_default_ts_ms(1)
        .with_max_line_len(256);
    if let Ok(event) = parse_line(format, data, &options) {
        assert!(!event.visitor_id.is_empty() && !event.url.is_empty());
    }
    let sliced: Vec<_> = parse_slice(data, format, options)
        .map(|r| r.map_err(|e| (e.line(), e.offset())))
        .collect();
    // A tiny buffer makes lines straddle refills.
    let streamed: Vec<_> = LineParser::new(BufReader::with_capacity(7, data), format)
        .with_options(options)
        .map(|r| r.map_err(|e| (e.line(), e.offset())))
        .collect();
    assert_eq!(sliced, streamed);
}
