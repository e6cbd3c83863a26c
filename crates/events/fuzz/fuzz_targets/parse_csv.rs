//! Fuzzes the CSV line parser (see `line_parser.rs` for what is checked).
#![no_main]

#[path = "line_parser.rs"]
mod line_parser;

use clickpulse_events::LineFormat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| line_parser::check(LineFormat::Csv, data));
