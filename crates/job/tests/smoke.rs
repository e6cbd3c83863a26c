//! The standard job runs end to end over an MSNBC slice and every stream produces rows.

use std::sync::Arc;
use std::time::Duration;

use clickpulse_engine::{QueueSource, RunMode, StreamingContext};
use clickpulse_events::{ClickEvent, msnbc, partition_for};
use clickpulse_job::history::{History, demo_history};
use clickpulse_job::{JobConfig, MemorySink, Outputs, STREAMS, StandardJob};

fn slice(n: usize, partitions: u32) -> Vec<Vec<Vec<ClickEvent>>> {
    let stream = msnbc::load(msnbc::default_msnbc_path()).expect("the MSNBC data set is in data/");
    let mut parts: Vec<Vec<ClickEvent>> = vec![Vec::new(); partitions as usize];
    for e in stream.iter().take(n) {
        parts[partition_for(&e.visitor_id, partitions) as usize].push(e);
    }
    parts
        .into_iter()
        .map(|p| p.chunks(5_000).map(<[ClickEvent]>::to_vec).collect())
        .collect()
}

#[test]
fn every_standard_stream_produces_rows_over_an_msnbc_slice() {
    let memory = MemorySink::new();
    let outputs = Outputs::new();
    outputs.add(Box::new(memory.clone()));
    let job = StandardJob {
        config: JobConfig::default(),
        outputs,
        history: Arc::new(History::new(demo_history().collect())),
    };
    let source = QueueSource::partitioned("clicks", slice(50_000, 4));
    let summary = StreamingContext::new(Duration::from_secs(1))
        .unwrap()
        .workers(2)
        .unwrap()
        .mode(RunMode::UntilEnd)
        .run(move |j| job.build(j, &source))
        .unwrap();
    assert_eq!(summary.input_rows, 50_000);
    assert_eq!(summary.late_events, 0);
    for stream in STREAMS {
        let rows = memory.rows(stream);
        eprintln!("{stream}: {} rows, first {:?}", rows.len(), rows.first());
        assert!(!rows.is_empty(), "{stream} produced no rows");
    }
    let views: u64 = memory
        .rows("page_views")
        .iter()
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    assert_eq!(views, 50_000);
}
