//! The hub's retained history as JSON text, kept in checkpoints: [`Hub::snapshot`] writes it and
//! [`Hub::restore`] reads it back, so that clients resuming after a restart get the batches the
//! previous process published.
//!
//! # Format (version 1)
//!
//! One JSON object (laid out here on several lines; written on one):
//!
//! ```json
//! {"format":1,"up_to_batch":42,"streams":[
//!   {"name":"top_pages","fields":["rank","url","count"],"evicted_up_to":30,
//!    "batches":[{"type":"batch","stream":"top_pages","batch":31,"window_start_ms":0,
//!                "window_end_ms":60000,"rows":[{"rank":1,"url":"/","count":3}]}]}]}
//! ```
//!
//! - `format`: 1. Any other value is refused: a newer clickpulse wrote the snapshot.
//! - `up_to_batch`: the checkpoint's batch. The snapshot holds no batch after it: the batches
//!   after the checkpoint are published again when the restarted job re-runs them.
//! - `streams`: every registered stream, each once, in name order, with
//!   - `fields`: its registered row fields;
//!   - `evicted_up_to`: the highest batch id (≤ `up_to_batch`) up to which the stream may have
//!     published batches the snapshot does not hold, because they had left the history;
//!     `null` when nothing is missing. Between it and the first batch held, nothing was
//!     published. This is what lets a restored hub tell an exact resume from one that needs a
//!     resync (see [`Subscription::subscribe`](super::Subscription::subscribe)).
//!   - `batches`: the retained batches ≤ `up_to_batch`, oldest first, ids strictly increasing
//!     and above `evicted_up_to`: each the batch message clients receive, without the
//!     per-client flags (`snapshot`, `resync`, `skipped`), rows as their JSON text. A restored
//!     hub sends them byte for byte as the earlier process did.
//!
//! Unknown fields anywhere are errors, as is every broken rule above: [`read`] names the stream
//! and batch at fault.

use std::collections::{BTreeSet, VecDeque};
use std::fmt::Display;
use std::sync::Arc;

use clickpulse_events::JsonRow;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use super::message::BatchMessage;
use super::{HubError, StreamInner, StreamUpdate};

/// The format version [`write`] writes and [`read`] reads.
pub(crate) const FORMAT: u64 = 1;

/// One stream's part of a snapshot, copied under its lock and serialised after.
#[derive(Debug, Serialize)]
pub(crate) struct StreamCopy {
    name: String,
    fields: Vec<String>,
    evicted_up_to: Option<u64>,
    batches: Vec<Unflagged>,
}

/// A retained message, serialised as its text without the per-client flags.
#[derive(Debug)]
struct Unflagged(Arc<BatchMessage>);

impl Serialize for Unflagged {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // serde_json takes text as is only as a `RawValue`, which it checks; the message is
        // JSON (`BatchMessage::encode` wrote it), so this does not fail.
        let text = self.0.unflagged();
        let raw: &RawValue = serde_json::from_slice(&text).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl StreamInner {
    /// This stream's part of a snapshot up to `up_to_batch`.
    pub(super) fn copy_up_to(&self, name: &str, up_to_batch: u64) -> StreamCopy {
        StreamCopy {
            name: name.to_owned(),
            fields: self.fields.clone(),
            // When every batch up to the checkpoint has left the history, batches up to the
            // checkpoint may be missing, but not those after it: the job publishes those again.
            evicted_up_to: self.evicted_up_to.map(|e| e.min(up_to_batch)),
            batches: self
                .history
                .iter()
                .take_while(|m| m.batch <= up_to_batch)
                .map(|m| Unflagged(m.clone()))
                .collect(),
        }
    }
}

#[derive(Serialize)]
struct SnapshotOut<'a> {
    format: u64,
    up_to_batch: u64,
    streams: &'a [StreamCopy],
}

/// The snapshot text of `streams`.
///
/// # Errors
/// [`HubError::Serialize`], not expected: the snapshot holds strings, numbers and messages the
/// hub wrote as JSON.
pub(crate) fn write(up_to_batch: u64, streams: &[StreamCopy]) -> Result<String, HubError> {
    let out = SnapshotOut {
        format: FORMAT,
        up_to_batch,
        streams,
    };
    Ok(serde_json::to_string(&out)?)
}

/// Just the version, read before the rest so that a newer format gets a clear error.
#[derive(Deserialize)]
struct Version {
    format: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotIn {
    /// Checked by [`Version`] before.
    #[serde(rename = "format")]
    _format: u64,
    up_to_batch: u64,
    streams: Vec<StreamIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamIn {
    name: String,
    fields: Vec<String>,
    evicted_up_to: Option<u64>,
    batches: Vec<BatchIn>,
}

/// A batch message without its flags, as [`Unflagged`] writes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchIn {
    #[serde(rename = "type")]
    kind: String,
    stream: String,
    batch: u64,
    window_start_ms: Option<u64>,
    window_end_ms: Option<u64>,
    rows: Vec<JsonRow>,
}

/// One stream read back from a snapshot, its history already within the hub's bound.
#[derive(Debug)]
pub(crate) struct RestoredStream {
    pub(crate) name: String,
    pub(crate) fields: Vec<String>,
    pub(crate) evicted_up_to: Option<u64>,
    pub(crate) history: VecDeque<Arc<BatchMessage>>,
}

/// Reads and checks a snapshot; keeps at most `history_len` batches per stream (the oldest
/// go, raising `evicted_up_to`, as if this hub had evicted them).
///
/// # Errors
/// [`HubError::BadSnapshot`] saying what is wrong, and where.
pub(crate) fn read(text: &str, history_len: usize) -> Result<Vec<RestoredStream>, HubError> {
    let version: Version =
        serde_json::from_str(text).map_err(|e| bad(format!("unreadable: {e}")))?;
    match version.format {
        Some(FORMAT) => {}
        Some(other) => {
            return Err(bad(format!(
                "format {other} is not one this version reads (it reads {FORMAT})"
            )));
        }
        None => return Err(bad("the `format` field is missing")),
    }
    let snapshot: SnapshotIn = serde_json::from_str(text).map_err(bad)?;
    let mut seen = BTreeSet::new();
    snapshot
        .streams
        .into_iter()
        .map(|stream| {
            if !seen.insert(stream.name.clone()) {
                return Err(bad(format!("stream {:?} appears twice", stream.name)));
            }
            stream.restore(snapshot.up_to_batch, history_len)
        })
        .collect()
}

impl StreamIn {
    fn restore(self, up_to_batch: u64, history_len: usize) -> Result<RestoredStream, HubError> {
        let name = self.name;
        let in_stream = |what: String| bad(format!("stream {name:?}: {what}"));
        if let Some(e) = self.evicted_up_to.filter(|&e| e > up_to_batch) {
            return Err(in_stream(format!(
                "evicted_up_to {e} is after up_to_batch {up_to_batch}"
            )));
        }
        let mut history = VecDeque::with_capacity(self.batches.len().min(history_len));
        let mut after = self.evicted_up_to;
        for batch in self.batches {
            batch.check(&name, up_to_batch, after).map_err(in_stream)?;
            after = Some(batch.batch);
            history.push_back(BatchMessage::encode(&batch.into_update(&name))?);
        }
        let mut evicted_up_to = self.evicted_up_to;
        while history.len() > history_len {
            evicted_up_to = history.pop_front().map(|m| m.batch).or(evicted_up_to);
        }
        Ok(RestoredStream {
            name,
            fields: self.fields,
            evicted_up_to,
            history,
        })
    }
}

impl BatchIn {
    /// Checks one batch of stream `name` that must come after batch `after`.
    fn check(&self, name: &str, up_to_batch: u64, after: Option<u64>) -> Result<(), String> {
        let id = self.batch;
        if self.kind != "batch" {
            return Err(format!(
                "batch {id} has type {:?}, not \"batch\"",
                self.kind
            ));
        }
        if self.stream != name {
            return Err(format!("batch {id} names the stream {:?}", self.stream));
        }
        if id > up_to_batch {
            return Err(format!("batch {id} is after up_to_batch {up_to_batch}"));
        }
        match after {
            Some(before) if id <= before => Err(format!(
                "batch {id} is not after {before} (batch ids must increase, above evicted_up_to)"
            )),
            _ => Ok(()),
        }
    }

    fn into_update(self, name: &str) -> StreamUpdate {
        StreamUpdate {
            stream: name.to_owned(),
            batch: self.batch,
            window_start_ms: self.window_start_ms,
            window_end_ms: self.window_end_ms,
            rows: self.rows,
        }
    }
}

fn bad(what: impl Display) -> HubError {
    HubError::BadSnapshot(what.to_string())
}

#[cfg(test)]
mod tests;
