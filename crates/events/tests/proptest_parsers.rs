//! Property tests of the line parsers: totality on any input, and round trips.

mod common;

use std::io::BufReader;

use clickpulse_events::{
    ClickEvent, LineError, LineFormat, LineParser, ParseError, ParseOptions, parse_line,
    parse_slice,
};
use proptest::prelude::*;

const FORMATS: [LineFormat; 3] = [LineFormat::Tsv, LineFormat::Csv, LineFormat::Ndjson];

fn options() -> ParseOptions {
    ParseOptions::default().with_default_ts_ms(7)
}

/// Lines that look like the formats, to reach deeper than random bytes do.
fn near_miss_line() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{0,21}\t[a-z\t]{0,4}\t[/a-z\t\r]{0,4}",
        "[a-z0-9\"]{0,4},[0-9\",x]{0,21},[/a-z\",]{0,5},[a-z\"]{0,3}",
        r#"\{("ts_ms":[-0-9.e"]{1,22},?|"visitor_id":("v"|1|null|\[\]),?|"url":"/u",?|"x":(1|true|"s"|\{\}|\[1\]|null),?|"properties":(\{"k":"v"\}|null|\{"k":\[\]\}),?){0,5}\}"#,
    ]
}

/// All results of reading `data` both ways; the two readers must agree.
fn read_both(
    data: &[u8],
    format: LineFormat,
    opts: ParseOptions,
) -> Vec<Result<ClickEvent, (u64, u64, LineError)>> {
    let simplify =
        |r: Result<ClickEvent, ParseError>| -> Result<ClickEvent, (u64, u64, LineError)> {
            match r {
                Ok(e) => Ok(e),
                Err(ParseError::Malformed {
                    line,
                    offset,
                    reason,
                }) => Err((line, offset, reason)),
                Err(ParseError::Io { source, .. }) => {
                    panic!("in-memory reads cannot fail: {source}")
                }
            }
        };
    // A tiny buffer makes lines straddle refills.
    let reader = BufReader::with_capacity(3, data);
    let streamed: Vec<_> = LineParser::new(reader, format)
        .with_options(opts)
        .map(simplify)
        .collect();
    let sliced: Vec<_> = parse_slice(data, format, opts).map(simplify).collect();
    assert_eq!(&streamed, &sliced);
    streamed
}

/// A TSV field that survives the trip: no tab, no line break, no BOM.
fn tsv_field() -> impl Strategy<Value = String> {
    "[^\t\r\n\u{feff}]{1,16}"
}

fn csv_quote(field: &str) -> String {
    if field.contains([',', '"']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_parser_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        for format in FORMATS {
            let _ = parse_line(format, &bytes, &options());
            let tight = options().with_max_line_len(8);
            let results = read_both(&bytes, format, tight);
            for (line, offset, _) in results.iter().filter_map(|r| r.as_ref().err()) {
                prop_assert!(*line >= 1);
                prop_assert!(*offset < bytes.len() as u64);
            }
        }
    }

    #[test]
    fn no_parser_panics_on_arbitrary_text(text in common::text()) {
        for format in FORMATS {
            let _ = parse_line(format, text.as_bytes(), &options());
            read_both(text.as_bytes(), format, options());
        }
    }

    #[test]
    fn no_parser_panics_on_near_misses(line in near_miss_line()) {
        for format in FORMATS {
            let result = parse_line(format, line.as_bytes(), &options());
            if let Ok(event) = result {
                prop_assert!(!event.visitor_id.is_empty() && !event.url.is_empty());
            }
        }
    }

    #[test]
    fn tsv_three_fields_round_trip(ts in any::<u64>(), visitor in tsv_field(), url in tsv_field()) {
        let line = format!("{ts}\t{visitor}\t{url}");
        let event = parse_line(LineFormat::Tsv, line.as_bytes(), &ParseOptions::default());
        prop_assert_eq!(event, Ok(ClickEvent::page_view(ts, visitor, url)));
    }

    #[test]
    fn tsv_two_fields_round_trip(visitor in tsv_field(), url in tsv_field()) {
        let line = format!("{visitor}\t{url}\r\n");
        prop_assume!(!line.trim_matches([' ', '\t', '\r', '\n']).is_empty());
        let event = parse_line(LineFormat::Tsv, line.as_bytes(), &options());
        prop_assert_eq!(event, Ok(ClickEvent::page_view(7, visitor, url)));
    }

    #[test]
    fn csv_round_trips_with_quoting(ts in any::<u64>(), ip in "[^\r\n]{1,12}", url in "[^\r\n]{1,16}") {
        prop_assume!(!ip.starts_with('\u{feff}'));
        let line = format!("{},{ts},{},{}", csv_quote(&ip), csv_quote(&url), csv_quote(&ip));
        let event = parse_line(LineFormat::Csv, line.as_bytes(), &ParseOptions::default());
        prop_assert_eq!(event, Ok(ClickEvent::page_view(ts, ip, url)));
    }

    #[test]
    fn ndjson_round_trips_serde_output(event in common::event()) {
        prop_assume!(!event.visitor_id.is_empty() && !event.url.is_empty());
        let line = serde_json::to_string(&event).expect("serialisable");
        prop_assert_eq!(parse_line(LineFormat::Ndjson, line.as_bytes(), &options()), Ok(event));
    }

    #[test]
    fn streams_yield_every_event_in_order_whatever_the_line_ends(
        events in proptest::collection::vec((any::<u64>(), tsv_field(), tsv_field()), 0..20),
        ends in proptest::collection::vec(prop_oneof!["\n", "\r\n", "\n\n", "\r\n \t\r\n"], 20),
    ) {
        let mut data = String::new();
        for ((ts, visitor, url), end) in events.iter().zip(&ends) {
            data.push_str(&format!("{ts}\t{visitor}\t{url}{end}"));
        }
        let got = read_both(data.as_bytes(), LineFormat::Tsv, ParseOptions::default());
        let want: Vec<_> = events
            .into_iter()
            .map(|(ts, v, u)| Ok(ClickEvent::page_view(ts, v, u)))
            .collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn a_bad_line_is_reported_where_it_is_and_never_stops_the_stream(
        good_before in 0usize..5,
        good_after in 0usize..5,
        bad in "[a-z]{1,8}",
    ) {
        let good = "1\tv\t/u\n";
        let data = format!("{}{bad}\n{}", good.repeat(good_before), good.repeat(good_after));
        let got = read_both(data.as_bytes(), LineFormat::Tsv, ParseOptions::default());
        prop_assert_eq!(got.len(), good_before + 1 + good_after);
        let bad_line = (good_before + 1) as u64;
        let bad_offset = (good_before * good.len()) as u64;
        prop_assert!(matches!(
            &got[good_before],
            Err((line, offset, LineError::FieldCount { found: 1, .. })) if *line == bad_line && *offset == bad_offset
        ), "bad line reported as {:?}", got[good_before]);
        prop_assert_eq!(got.iter().filter(|r| r.is_ok()).count(), good_before + good_after);
    }
}
