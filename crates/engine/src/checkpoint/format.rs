//! What checkpoints and the offset log look like in storage.
//!
//! Every object is framed the same way, so that a torn or corrupted object is recognised and
//! never half-read:
//!
//! ```text
//! magic "CPK1" (4 bytes) | kind (1 byte) | payload length (u64 LE) | CRC-32C of payload (u32 LE) | payload
//! ```
//!
//! The payload is bincode (parts, offset-log records) or JSON (manifests, which people read).
//! Paths, under the store's root and the current generation `g{NNNN}/` (a generation is one
//! history of the job; `--from-scratch` starts the next and leaves the older ones untouched):
//!
//! | path | what |
//! |---|---|
//! | `wal/{batch:020}-e{epoch:06}-w{worker:04}-of{workers:04}` | one worker's [`WalRecord`] for one batch |
//! | `checkpoints/{batch:020}/part-{worker:04}-of-{workers:04}` | one worker's [`WorkerPart`] |
//! | `checkpoints/{batch:020}/MANIFEST` | the [`Manifest`], written last |
//!
//! An epoch is one run of the job (a start or restart); records of one batch from one epoch are
//! complete when every worker of that epoch wrote one.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::source::PartitionId;
use crate::time::BatchId;
use crate::watermark::WatermarkReport;

const MAGIC: &[u8; 4] = b"CPK1";
const HEADER: usize = 4 + 1 + 8 + 4;

/// Which kind of object a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    Wal = 1,
    Part = 2,
    Manifest = 3,
}

/// Why an object could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Shorter than its header says: a torn write.
    #[error("torn object: {0}")]
    Torn(String),
    /// The checksum or the magic does not match: the bytes were damaged.
    #[error("corrupt object: {0}")]
    Corrupt(String),
    /// The payload does not decode as the expected type (another version wrote it).
    #[error("undecodable object: {0}")]
    Decode(String),
}

/// Frames `payload` as an object of `kind`.
pub(crate) fn frame(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.push(kind as u8);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of a framed object of `kind`, checked.
///
/// # Errors
/// [`FormatError`] for a short, damaged or mislabelled object.
pub(crate) fn unframe(kind: Kind, bytes: &[u8]) -> Result<&[u8], FormatError> {
    let header = bytes.get(..HEADER).ok_or_else(|| {
        FormatError::Torn(format!("{} bytes, shorter than a header", bytes.len()))
    })?;
    let (magic, rest) = header.split_at(4);
    if magic != MAGIC || rest.first() != Some(&(kind as u8)) {
        return Err(FormatError::Corrupt("bad magic or kind".into()));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(rest.get(1..9).unwrap_or(&[0; 8]));
    let mut crc = [0u8; 4];
    crc.copy_from_slice(rest.get(9..13).unwrap_or(&[0; 4]));
    let len = usize::try_from(u64::from_le_bytes(len)).unwrap_or(usize::MAX);
    let payload = bytes.get(HEADER..).unwrap_or_default();
    if payload.len() < len {
        return Err(FormatError::Torn(format!(
            "payload of {} bytes, header says {len}",
            payload.len()
        )));
    }
    let payload = payload.get(..len).unwrap_or_default();
    if crc32c::crc32c(payload) != u32::from_le_bytes(crc) {
        return Err(FormatError::Corrupt("checksum mismatch".into()));
    }
    Ok(payload)
}

/// `value` as a framed bincode object.
pub(crate) fn encode<T: Serialize>(kind: Kind, value: &T) -> Vec<u8> {
    // Serialising into memory cannot fail for the engine's own types.
    let payload = bincode::serialize(value).unwrap_or_default();
    frame(kind, &payload)
}

/// A framed bincode object.
///
/// # Errors
/// [`FormatError`] when the object is torn, damaged or of another layout.
pub(crate) fn decode<T: DeserializeOwned>(kind: Kind, bytes: &[u8]) -> Result<T, FormatError> {
    let payload = unframe(kind, bytes)?;
    bincode::deserialize(payload).map_err(|e| FormatError::Decode(e.to_string()))
}

/// Offsets one worker read from one partition in one batch, `[from, to)`, and whether the
/// partition had ended after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRange {
    /// The source's name.
    pub source: String,
    /// The partition.
    pub partition: PartitionId,
    /// First offset of the batch.
    pub from: u64,
    /// Next offset after the batch.
    pub to: u64,
}

/// What one worker logs for one batch before any of its output may leave the process: the
/// input it read and the processing-time inputs that shaped the batch (the watermark reports it
/// sent, which fold in the clock's readings of idle partitions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WalRecord {
    /// The batch.
    pub batch: BatchId,
    /// The run (start or restart) that wrote it.
    pub epoch: u64,
    /// The worker that wrote it.
    pub worker: u32,
    /// How many workers that run had.
    pub workers: u32,
    /// Every partition the worker owns (empty ranges too).
    pub partitions: Vec<PartitionRange>,
    /// The watermark reports it sent, per event-time source.
    pub watermarks: Vec<(String, WatermarkReport)>,
}

/// Where a partition stands after a checkpoint's batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionPosition {
    /// The source's name.
    pub source: String,
    /// The partition.
    pub partition: PartitionId,
    /// The next offset to read.
    pub next_offset: u64,
    /// The highest event time read from it so far (event-time sources).
    pub max_ts: Option<u64>,
}

/// One operator's state on one worker: what every worker holds alike (`global`: watermark
/// trackers, closed-window marks) and keyed state split by key group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorState {
    /// Bincode of the operator's unkeyed state.
    pub global: Vec<u8>,
    /// Bincode of a `Vec` of entries, per key group.
    pub groups: BTreeMap<u32, Vec<u8>>,
    /// Entries per key group (for the state inspector and metrics).
    pub entries: BTreeMap<u32, u64>,
}

impl OperatorState {
    /// The unkeyed state as JSON (for the state inspector).
    ///
    /// # Errors
    /// [`FormatError::Decode`] when the bytes are not MessagePack.
    pub fn global_json(&self) -> Result<serde_json::Value, FormatError> {
        to_json(&self.global)
    }

    /// Every keyed entry as JSON, key group by key group (for the state inspector). An entry is
    /// the operator's own tuple, its key first.
    ///
    /// # Errors
    /// [`FormatError::Decode`] when the bytes are not MessagePack.
    pub fn entries_json(&self) -> Result<Vec<(u32, serde_json::Value)>, FormatError> {
        let mut out = Vec::new();
        for (g, bytes) in &self.groups {
            match to_json(bytes)? {
                serde_json::Value::Array(entries) => {
                    out.extend(entries.into_iter().map(|e| (*g, e)))
                }
                other => out.push((*g, other)),
            }
        }
        Ok(out)
    }
}

/// MessagePack bytes as JSON: binary data as an array of byte values, extension types as
/// `{"ext": type, "data": [...]}`, map keys as their JSON text unless they are strings.
fn to_json(bytes: &[u8]) -> Result<serde_json::Value, FormatError> {
    let value = rmpv::decode::read_value(&mut &bytes[..])
        .map_err(|e| FormatError::Decode(e.to_string()))?;
    Ok(value_json(value))
}

fn value_json(v: rmpv::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        rmpv::Value::Nil => J::Null,
        rmpv::Value::Boolean(b) => J::Bool(b),
        rmpv::Value::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => J::from(u),
            (None, Some(s)) => J::from(s),
            _ => J::Null,
        },
        rmpv::Value::F32(f) => J::from(f64::from(f)),
        rmpv::Value::F64(f) => J::from(f),
        rmpv::Value::String(s) => J::String(s.into_str().unwrap_or_default()),
        rmpv::Value::Binary(b) => J::Array(b.into_iter().map(J::from).collect()),
        rmpv::Value::Array(items) => J::Array(items.into_iter().map(value_json).collect()),
        rmpv::Value::Map(pairs) => J::Object(
            pairs
                .into_iter()
                .map(|(k, v)| {
                    let key = match value_json(k) {
                        J::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, value_json(v))
                })
                .collect(),
        ),
        rmpv::Value::Ext(t, data) => serde_json::json!({"ext": t, "data": data}),
    }
}

/// One worker's share of a checkpoint: every stateful operator's state, by operator name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerPart {
    /// The checkpoint's batch.
    pub batch: BatchId,
    /// The worker.
    pub worker: u32,
    /// How many workers took the checkpoint.
    pub workers: u32,
    /// State by operator name.
    pub operators: BTreeMap<String, OperatorState>,
}

/// What makes a checkpoint visible: written last, after every part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub version: u32,
    /// The last batch the checkpoint includes.
    pub batch: BatchId,
    /// How many workers took it.
    pub workers: u32,
    /// Key groups the keyed state is split into.
    pub key_groups: u32,
    /// What the job was (streams, windows, operators); a restore with another job is refused.
    pub fingerprint: BTreeMap<String, String>,
    /// Every part's path, relative to the checkpoint's directory.
    pub parts: Vec<String>,
    /// Bytes of all parts.
    pub bytes: u64,
    /// Where every partition stands after `batch`.
    pub positions: Vec<PartitionPosition>,
    /// Milliseconds since the epoch when it was written.
    pub created_ms: u64,
    /// Extra state of the embedding program (the hub's retained history, say), by name.
    pub extra: BTreeMap<String, String>,
}

/// The manifest's format version.
pub(crate) const MANIFEST_VERSION: u32 = 1;

impl Manifest {
    /// As a framed JSON object.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let payload = serde_json::to_vec_pretty(self).unwrap_or_default();
        frame(Kind::Manifest, &payload)
    }

    /// From a framed JSON object.
    ///
    /// # Errors
    /// [`FormatError`] when the object is torn, damaged or not a manifest.
    pub fn decode(bytes: &[u8]) -> Result<Manifest, FormatError> {
        let payload = unframe(Kind::Manifest, bytes)?;
        serde_json::from_slice(payload).map_err(|e| FormatError::Decode(e.to_string()))
    }
}

/// A worker part from its stored bytes.
///
/// # Errors
/// [`FormatError`] when the object is torn, damaged or of another layout.
pub fn decode_part(bytes: &[u8]) -> Result<WorkerPart, FormatError> {
    decode(Kind::Part, bytes)
}

/// Paths of the objects of one generation.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: String,
}

impl Layout {
    pub(crate) fn new(generation: u32) -> Self {
        Layout {
            root: format!("g{generation:04}/"),
        }
    }

    pub(crate) fn wal_prefix(&self) -> String {
        format!("{}wal/", self.root)
    }

    pub(crate) fn wal(&self, batch: BatchId, epoch: u64, worker: u32, workers: u32) -> String {
        format!(
            "{}wal/{batch:020}-e{epoch:06}-w{worker:04}-of{workers:04}",
            self.root
        )
    }

    pub(crate) fn checkpoints_prefix(&self) -> String {
        format!("{}checkpoints/", self.root)
    }

    pub(crate) fn checkpoint_dir(&self, batch: BatchId) -> String {
        format!("{}checkpoints/{batch:020}/", self.root)
    }

    pub(crate) fn part_name(worker: u32, workers: u32) -> String {
        format!("part-{worker:04}-of-{workers:04}")
    }

    pub(crate) fn manifest(&self, batch: BatchId) -> String {
        format!("{}MANIFEST", self.checkpoint_dir(batch))
    }
}

/// The generation a path belongs to (`g0003/…` → 3).
pub(crate) fn generation_of(path: &str) -> Option<u32> {
    path.strip_prefix('g')?.split('/').next()?.parse().ok()
}

/// A WAL object's `(batch, epoch, worker, workers)` from its path.
pub(crate) fn parse_wal_name(path: &str) -> Option<(BatchId, u64, u32, u32)> {
    let name = path.rsplit('/').next()?;
    let mut it = name.split('-');
    let batch = it.next()?.parse().ok()?;
    let epoch = it.next()?.strip_prefix('e')?.parse().ok()?;
    let worker = it.next()?.strip_prefix('w')?.parse().ok()?;
    let workers = it.next()?.strip_prefix("of")?.parse().ok()?;
    Some((batch, epoch, worker, workers))
}

/// A checkpoint directory's batch from a path under it (`…/checkpoints/000…42/MANIFEST` → 42).
pub(crate) fn parse_checkpoint_batch(path: &str) -> Option<BatchId> {
    let mut parts = path.rsplit('/');
    let _file = parts.next()?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_detect_damage() {
        let bytes = frame(Kind::Wal, b"hello");
        assert_eq!(unframe(Kind::Wal, &bytes).unwrap(), b"hello");
        // Torn: any prefix is refused.
        for cut in 0..bytes.len() {
            assert!(unframe(Kind::Wal, &bytes[..cut]).is_err(), "cut at {cut}");
        }
        // Damaged: any flipped payload or header byte is refused.
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(unframe(Kind::Wal, &bad).is_err(), "flip at {i}");
        }
        assert!(unframe(Kind::Part, &bytes).is_err(), "wrong kind");
    }

    #[test]
    fn names_parse_back() {
        let l = Layout::new(3);
        let wal = l.wal(42, 7, 1, 2);
        assert_eq!(generation_of(&wal), Some(3));
        assert_eq!(parse_wal_name(&wal), Some((42, 7, 1, 2)));
        assert_eq!(parse_checkpoint_batch(&l.manifest(99)), Some(99));
    }
}
