//! What a restart finds: the newest usable checkpoint and the batches logged after it.
//!
//! The decisions are pure functions over what the storage lists ([`choose_replay`]); the rest
//! reads objects and reports what it skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::format::{
    Kind, Layout, Manifest, WalRecord, WorkerPart, decode, decode_part, generation_of,
    parse_checkpoint_batch, parse_wal_name,
};
use super::{CheckpointStore, Checkpointing};
use crate::error::RecoveryError;
use crate::time::BatchId;

/// What a job starts from: a restored checkpoint (or none) and the logged batches to re-run.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    pub(crate) generation: u32,
    pub(crate) epoch: u64,
    pub(crate) manifest: Option<Manifest>,
    pub(crate) parts: Arc<Vec<WorkerPart>>,
    pub(crate) replay: BTreeMap<BatchId, Vec<WalRecord>>,
    /// Checkpoints skipped because they were torn or damaged: (batch, why).
    pub(crate) skipped: Vec<(BatchId, String)>,
}

impl Recovered {
    /// The batch of the checkpoint restored, if one was.
    pub fn resumed_from(&self) -> Option<BatchId> {
        self.manifest.as_ref().map(|m| m.batch)
    }

    /// The first batch the job runs (re-run or new).
    pub fn first_batch(&self) -> BatchId {
        self.manifest.as_ref().map_or(0, |m| m.batch + 1)
    }

    /// Batches logged after the checkpoint, which the job re-runs before cutting new ones.
    pub fn replay_batches(&self) -> u64 {
        self.replay.len() as u64
    }

    /// The restored manifest.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// The embedding program's extra state kept in the restored manifest.
    pub fn extra(&self) -> BTreeMap<String, String> {
        self.manifest
            .as_ref()
            .map(|m| m.extra.clone())
            .unwrap_or_default()
    }

    /// Checkpoints skipped because they could not be read, newest first: (batch, why).
    pub fn skipped(&self) -> &[(BatchId, String)] {
        &self.skipped
    }

    /// The generation (history) the job writes to.
    pub fn generation(&self) -> u32 {
        self.generation
    }
}

/// Which batches to re-run after `after`: from `after + 1` on, every batch for which some run
/// (epoch) logged a record from each of its workers, up to the first batch with none. Returns
/// each batch with the epoch whose records to use. `wal` holds `(batch, epoch, worker, workers)`
/// of every logged record.
///
/// # Examples
/// ```
/// use clickpulse_engine::checkpoint::recovery::choose_replay;
/// // Epoch 1 (2 workers) logged batches 0..=2 completely and batch 3 from worker 0 only.
/// let wal = [(0, 1, 0, 2), (0, 1, 1, 2), (1, 1, 0, 2), (1, 1, 1, 2),
///            (2, 1, 0, 2), (2, 1, 1, 2), (3, 1, 0, 2)];
/// assert_eq!(choose_replay(&wal, Some(0)), vec![(1, 1), (2, 1)]);
/// assert_eq!(choose_replay(&wal, None), vec![(0, 1), (1, 1), (2, 1)]);
/// ```
pub fn choose_replay(
    wal: &[(BatchId, u64, u32, u32)],
    after: Option<BatchId>,
) -> Vec<(BatchId, u64)> {
    let mut by_batch: BTreeMap<BatchId, BTreeMap<u64, (u32, BTreeSet<u32>)>> = BTreeMap::new();
    for &(batch, epoch, worker, workers) in wal {
        let e = by_batch
            .entry(batch)
            .or_default()
            .entry(epoch)
            .or_insert((workers, BTreeSet::new()));
        if e.0 == workers {
            e.1.insert(worker);
        }
    }
    let mut out = Vec::new();
    let mut next = after.map_or(0, |a| a + 1);
    while let Some(epochs) = by_batch.get(&next) {
        let complete = epochs
            .iter()
            .rev()
            .find(|(_, (workers, seen))| seen.len() == *workers as usize);
        let Some((epoch, _)) = complete else {
            break;
        };
        out.push((next, *epoch));
        next += 1;
    }
    out
}

/// Everything under the store, listed once.
struct Listing {
    generation: u32,
    manifests: Vec<BatchId>,
    wal: Vec<(BatchId, u64, u32, u32)>,
}

fn list(store: &dyn CheckpointStore, from_scratch: bool) -> Result<Listing, RecoveryError> {
    let all = store.list("g")?;
    let newest = all.iter().filter_map(|p| generation_of(p)).max();
    let generation = match (newest, from_scratch) {
        (Some(g), true) => g + 1,
        (Some(g), false) => g,
        (None, _) => 0,
    };
    let layout = Layout::new(generation);
    let (checkpoints, wal_prefix) = (layout.checkpoints_prefix(), layout.wal_prefix());
    let mut manifests: Vec<BatchId> = all
        .iter()
        .filter(|p| p.starts_with(&checkpoints) && p.ends_with("/MANIFEST"))
        .filter_map(|p| parse_checkpoint_batch(p))
        .collect();
    manifests.sort_unstable_by(|a, b| b.cmp(a));
    let wal = all
        .iter()
        .filter(|p| p.starts_with(&wal_prefix))
        .filter_map(|p| parse_wal_name(p))
        .collect();
    Ok(Listing {
        generation,
        manifests,
        wal,
    })
}

/// Finds what the job starts from. `key_groups` is the job's key group count.
///
/// # Errors
/// [`RecoveryError::Store`] when the storage cannot be read; [`RecoveryError::JobChanged`] when
/// the newest readable checkpoint was taken by another job.
pub(crate) fn recover(
    settings: &Checkpointing,
    key_groups: u32,
) -> Result<Recovered, RecoveryError> {
    let store = settings.store.as_ref();
    let listing = list(store, settings.from_scratch)?;
    let layout = Layout::new(listing.generation);
    let mut skipped = Vec::new();
    let mut restored = None;
    for &batch in &listing.manifests {
        match load(store, &layout, batch) {
            Ok(found) => {
                check_job(store, &found.0, &settings.fingerprint, key_groups)?;
                restored = Some(found);
                break;
            }
            Err(why) => {
                tracing::warn!(batch, store = %store.describe(), why = %why,
                    "checkpoint skipped; trying the one before");
                skipped.push((batch, why));
            }
        }
    }
    let after = restored.as_ref().map(|(m, _)| m.batch);
    let mut replay = BTreeMap::new();
    for (batch, epoch) in choose_replay(&listing.wal, after) {
        match load_wal(store, &layout, &listing.wal, batch, epoch) {
            Ok(records) => {
                replay.insert(batch, records);
            }
            Err(why) => {
                tracing::warn!(batch, why = %why, "offset log record unreadable; re-running stops before it");
                break;
            }
        }
    }
    let epoch = listing.wal.iter().map(|w| w.1).max().unwrap_or(0) + 1;
    let (manifest, parts) = match restored {
        Some((m, p)) => (Some(m), p),
        None => (None, Vec::new()),
    };
    Ok(Recovered {
        generation: listing.generation,
        epoch,
        manifest,
        parts: Arc::new(parts),
        replay,
        skipped,
    })
}

/// A checkpoint's manifest and parts, or why it cannot be used.
fn load(
    store: &dyn CheckpointStore,
    layout: &Layout,
    batch: BatchId,
) -> Result<(Manifest, Vec<WorkerPart>), String> {
    let bytes = store
        .get(&layout.manifest(batch))
        .map_err(|e| e.to_string())?
        .ok_or("its manifest vanished")?;
    let manifest = Manifest::decode(&bytes).map_err(|e| format!("manifest: {e}"))?;
    let mut parts = Vec::with_capacity(manifest.parts.len());
    for name in &manifest.parts {
        let path = format!("{}{name}", layout.checkpoint_dir(batch));
        let bytes = store
            .get(&path)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("part {name} is missing"))?;
        parts.push(decode_part(&bytes).map_err(|e| format!("part {name}: {e}"))?);
    }
    if parts.len() != manifest.workers as usize {
        return Err(format!(
            "{} parts for {} workers",
            parts.len(),
            manifest.workers
        ));
    }
    Ok((manifest, parts))
}

/// Refuses a checkpoint of another job, naming every setting that differs.
fn check_job(
    store: &dyn CheckpointStore,
    manifest: &Manifest,
    fingerprint: &BTreeMap<String, String>,
    key_groups: u32,
) -> Result<(), RecoveryError> {
    let mut differences = Vec::new();
    if manifest.key_groups != key_groups {
        differences.push(format!(
            "key groups: checkpoint {}, job {key_groups}",
            manifest.key_groups
        ));
    }
    let keys: BTreeSet<&String> = manifest
        .fingerprint
        .keys()
        .chain(fingerprint.keys())
        .collect();
    for k in keys {
        let (old, new) = (manifest.fingerprint.get(k), fingerprint.get(k));
        if old != new {
            let show = |v: Option<&String>| v.map_or("(none)".to_string(), |v| format!("`{v}`"));
            differences.push(format!("{k}: checkpoint {}, job {}", show(old), show(new)));
        }
    }
    if differences.is_empty() {
        return Ok(());
    }
    Err(RecoveryError::JobChanged {
        store: store.describe(),
        batch: manifest.batch,
        differences,
    })
}

fn load_wal(
    store: &dyn CheckpointStore,
    layout: &Layout,
    wal: &[(BatchId, u64, u32, u32)],
    batch: BatchId,
    epoch: u64,
) -> Result<Vec<WalRecord>, String> {
    let mut records = Vec::new();
    for &(b, e, worker, workers) in wal {
        if b != batch || e != epoch {
            continue;
        }
        let path = layout.wal(b, e, worker, workers);
        let bytes = store
            .get(&path)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("{path} vanished"))?;
        records.push(decode::<WalRecord>(Kind::Wal, &bytes).map_err(|e| format!("{path}: {e}"))?);
    }
    Ok(records)
}

/// The newest readable checkpoint of the newest generation in `store`, read-only: its manifest
/// and every worker's part (for the state inspector). `None` when there is none.
///
/// # Errors
/// [`RecoveryError::Store`] when the storage cannot be read.
pub fn inspect(
    store: &dyn CheckpointStore,
) -> Result<Option<(Manifest, Vec<WorkerPart>)>, RecoveryError> {
    let listing = list(store, false)?;
    let layout = Layout::new(listing.generation);
    for &batch in &listing.manifests {
        match load(store, &layout, batch) {
            Ok(found) => return Ok(Some(found)),
            Err(why) => tracing::warn!(batch, why = %why, "checkpoint skipped"),
        }
    }
    Ok(None)
}
