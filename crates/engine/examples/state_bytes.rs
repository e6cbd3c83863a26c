//! Measures the heap that `update_state_by_key` holds per key, with a counting allocator.
//!
//! `cargo run --release -p clickpulse-engine --example state_bytes [KEYS]`
//!
//! One batch brings KEYS distinct u64 keys (a running count each, so key and value are 8 bytes
//! each); a second, empty batch keeps the state. When the first batch completes, the input has
//! been consumed and freed and the outputs have been consumed, so the live heap beyond the
//! baseline is the operator's state.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clickpulse_engine::listener::{BatchCompleted, StreamingListener};
use clickpulse_engine::{QueueSource, RunMode, StreamingContext};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY-free forwarding: every call goes to the system allocator; only a counter is added.
#[allow(
    unsafe_code,
    reason = "a global allocator is an unsafe trait; this one only counts"
)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct AfterFirstBatch(Arc<Mutex<Option<(isize, u64)>>>);

impl StreamingListener for AfterFirstBatch {
    fn on_batch_completed(&self, e: &BatchCompleted) {
        if e.batch == 0 {
            let keys = e.state.get("update_state_by_key").map_or(0, |s| s.keys);
            *self.0.lock().expect("not poisoned") = Some((LIVE.load(Ordering::Relaxed), keys));
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let input: Vec<(u64, u64)> = (0..keys).map(|k| (k, 1)).collect();
    let input_bytes = (input.capacity() * std::mem::size_of::<(u64, u64)>()) as isize;
    let source = QueueSource::from_batches("keys", vec![input, Vec::new()]);
    let seen = Arc::new(Mutex::new(None));
    let mut ctx = StreamingContext::new(Duration::from_secs(1))?
        .mode(RunMode::UntilEnd)
        .max_records_per_partition(usize::MAX)?;
    ctx.add_listener(Arc::new(AfterFirstBatch(Arc::clone(&seen))));
    let baseline = LIVE.load(Ordering::Relaxed) - input_bytes;
    ctx.run(move |job| {
        job.source(&source)?
            .update_state_by_key(|vals: Vec<u64>, old: Option<u64>| {
                Some(old.unwrap_or(0) + vals.len() as u64)
            })
            .count()
            .foreach_batch(|_, _| {});
        Ok(())
    })?;
    let (live, state_keys) = seen.lock().expect("not poisoned").ok_or("no first batch")?;
    let per_key = (live - baseline) as f64 / keys as f64;
    println!(
        "update_state_by_key: {keys} keys ({state_keys} reported), state heap {:.1} MiB",
        (live - baseline) as f64 / 1048576.0
    );
    println!(
        "  {per_key:.1} bytes per key; {:.1} bytes per key beyond the key's and value's own 16 bytes",
        per_key - 16.0
    );
    Ok(())
}
