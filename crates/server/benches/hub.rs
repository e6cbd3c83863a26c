//! Cost of `Hub::publish` for the engine thread, by number of subscribers.
//!
//! `cargo bench -p clickpulse-server --bench hub`

use std::hint::black_box;
use std::sync::Arc;

use clickpulse_server::{Hub, HubConfig, Metrics, StreamUpdate, Subscription};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use serde_json::json;

/// A `top_pages`-like batch: 10 rows.
fn rows() -> Vec<clickpulse_events::JsonRow> {
    (0..10)
        .map(|i| json!({"rank": i + 1, "url": format!("/category/{i}"), "count": 1000 - i}).into())
        .collect()
}

fn publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("hub_publish");
    for subscribers in [0usize, 100, 1000] {
        let hub = Hub::new(HubConfig::default(), Arc::new(Metrics::new()));
        hub.register_stream(
            "top_pages",
            vec!["rank".into(), "url".into(), "count".into()],
        );
        // Subscribers that never read: every publish after the first conflates, the steady
        // state of a slow client and the most work publish does per subscriber.
        let subs: Vec<Subscription> = (0..subscribers)
            .map(|_| {
                let s = hub.subscription();
                s.subscribe(&["top_pages".to_string()], None)
                    .expect("subscribe");
                s
            })
            .collect();
        let rows = rows();
        let mut batch = 0u64;
        group.bench_with_input(
            BenchmarkId::from_parameter(subscribers),
            &subscribers,
            |b, _| {
                b.iter(|| {
                    batch += 1;
                    hub.publish(StreamUpdate::new("top_pages", batch, rows.clone()))
                        .expect("publish");
                });
            },
        );
        black_box(subs);
    }
    group.finish();
}

criterion_group!(benches, publish);
criterion_main!(benches);
