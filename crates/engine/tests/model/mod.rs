//! A plain, single-threaded reference model of the engine's operators, written from their
//! documentation and sharing no code with the engine: batches are `Vec<Vec<T>>`, state is a
//! `BTreeMap`, and every function returns one output batch per input batch, sorted within the
//! batch as the engine's test helpers sort it.
//!
//! - [`dstream`]: the processing-time (batch-by-batch) operators.
//! - [`event_time`]: watermarks as the source driver computes them in until-end mode, and the
//!   event-time windows, sessions and distinct counts closed by them, with their late events.
#![allow(
    dead_code,
    reason = "each test binary uses a different part of the model"
)]

pub mod dstream;
pub mod event_time;

/// How many batches an until-end run over these partitions takes: one per queued batch of the
/// longest partition, and at least one (a source with nothing queued still runs batch 0).
pub fn batch_count<T>(partitions: &[Vec<Vec<T>>]) -> usize {
    partitions.iter().map(Vec::len).max().unwrap_or(0).max(1)
}

/// The records of every engine batch: each partition gives its `b`-th queued batch to batch `b`.
pub fn merge_partitions<T: Clone>(partitions: &[Vec<Vec<T>>]) -> Vec<Vec<T>> {
    (0..batch_count(partitions))
        .map(|b| {
            partitions
                .iter()
                .filter_map(|p| p.get(b))
                .flat_map(|batch| batch.iter().cloned())
                .collect()
        })
        .collect()
}
