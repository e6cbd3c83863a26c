//! Fuzzes the TSV line parser: any bytes, as one line or as a stream of lines, must parse
//! or fail cleanly, and the streaming and in-memory readers must agree.
#![no_main]

use std::io::BufReader;

use clickpulse_events::{LineFormat, LineParser, ParseOptions, parse_line, parse_slice};
use libfuzzer_sys::fuzz_target;

const FORMAT: LineFormat = LineFormat::Tsv;

fuzz_target!(|data: &[u8]| {
    let options = ParseOptions::default()
        .with_default_ts_ms(1)
        .with_max_line_len(256);
    if let Ok(event) = parse_line(FORMAT, data, &options) {
        assert!(!event.visitor_id.is_empty() && !event.url.is_empty());
    }
    let sliced: Vec<_> = parse_slice(data, FORMAT, options)
        .map(|r| r.map_err(|e| (e.line(), e.offset())))
        .collect();
    // A tiny buffer makes lines straddle refills.
    let streamed: Vec<_> = LineParser::new(BufReader::with_capacity(7, data), FORMAT)
        .with_options(options)
        .map(|r| r.map_err(|e| (e.line(), e.offset())))
        .collect();
    assert_eq!(sliced, streamed);
});
