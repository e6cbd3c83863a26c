//! How a stateful operator saves and restores its state: a [`StateHandle`] per operator.
//!
//! Operators save in-band: when an operator ends a batch the worker loop marked as a
//! checkpoint batch, it serialises its state there and then, so the state is exactly the state
//! after that batch (an operator takes no record of a later batch before it has ended the earlier
//! ones). Keyed entries are split into key groups by the same hash the operator's exchange routes
//! them by, so a checkpoint restores with any worker count: worker `w` of `W` owns the groups
//! `g` with `g mod W == w`, exactly the keys the exchange sends it.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::format::{OperatorState, WorkerPart};
use crate::error::{EngineError, RecoveryError, Result};
use crate::time::BatchId;

/// One worker's checkpoint bookkeeping, shared by the operators it builds.
pub(crate) struct WorkerCheckpoint {
    pub key_groups: u32,
    pub worker: usize,
    pub peers: usize,
    /// Batches at whose end operators save their state.
    due: RefCell<BTreeSet<BatchId>>,
    /// What the operators saved, by batch.
    taken: RefCell<BTreeMap<BatchId, BTreeMap<String, OperatorState>>>,
    /// The checkpoint being restored from: every worker's part.
    restored: Option<Arc<Vec<WorkerPart>>>,
    /// Operators built so far, per kind (for their names).
    kinds: RefCell<BTreeMap<&'static str, usize>>,
    /// The names of every stateful operator built.
    names: RefCell<BTreeSet<String>>,
}

impl WorkerCheckpoint {
    pub(crate) fn new(
        key_groups: u32,
        worker: usize,
        peers: usize,
        restored: Option<Arc<Vec<WorkerPart>>>,
    ) -> Self {
        WorkerCheckpoint {
            key_groups: key_groups.max(1),
            worker,
            peers: peers.max(1),
            due: RefCell::default(),
            taken: RefCell::default(),
            restored,
            kinds: RefCell::default(),
            names: RefCell::default(),
        }
    }

    /// The key group of a record whose exchange hash is `hash`; exchanges route by it.
    pub(crate) fn group(&self, hash: u64) -> u64 {
        hash % u64::from(self.key_groups)
    }

    /// Marks `batch` as a checkpoint batch (before any worker's input moves past it).
    pub(crate) fn mark_due(&self, batch: BatchId) {
        self.due.borrow_mut().insert(batch);
    }

    fn is_due(&self, batch: BatchId) -> bool {
        self.due.borrow().contains(&batch)
    }

    /// What the operators saved for `batch` (once every operator of this worker ended it), or
    /// `None` when `batch` was not a checkpoint batch.
    pub(crate) fn take(&self, batch: BatchId) -> Option<BTreeMap<String, OperatorState>> {
        if !self.due.borrow_mut().remove(&batch) {
            return None;
        }
        Some(self.taken.borrow_mut().remove(&batch).unwrap_or_default())
    }

    /// The names of the stateful operators built on this worker.
    pub(crate) fn names(&self) -> BTreeSet<String> {
        self.names.borrow().clone()
    }

    /// Operators the restored checkpoint holds state for that this job did not build.
    pub(crate) fn unclaimed(&self) -> Vec<String> {
        let names = self.names.borrow();
        let mut missing: BTreeSet<String> = BTreeSet::new();
        for part in self.restored.iter().flat_map(|p| p.iter()) {
            missing.extend(
                part.operators
                    .keys()
                    .filter(|n| !names.contains(*n))
                    .cloned(),
            );
        }
        missing.into_iter().collect()
    }
}

/// A stateful operator's link to checkpoints: its stable name (its kind, numbered from the
/// second instance on in build order, which is the same on every worker and every run of the
/// same job) and the worker's bookkeeping.
pub(crate) struct StateHandle {
    name: String,
    ckpt: Rc<WorkerCheckpoint>,
}

impl StateHandle {
    pub(crate) fn new(ckpt: &Rc<WorkerCheckpoint>, kind: &'static str) -> Self {
        let name = crate::dstream::numbered(&mut ckpt.kinds.borrow_mut(), kind);
        ckpt.names.borrow_mut().insert(name.clone());
        StateHandle {
            name,
            ckpt: Rc::clone(ckpt),
        }
    }

    /// Whether the operator must save its state at the end of `batch`.
    pub(crate) fn due(&self, batch: BatchId) -> bool {
        self.ckpt.is_due(batch)
    }

    /// Saves the state after `batch`: `global` (what every worker holds alike, or what is merged
    /// on restore) and `keyed` entries, each with the hash the operator's exchange routes it by.
    pub(crate) fn save<G: Serialize, E: Serialize>(
        &self,
        batch: BatchId,
        global: &G,
        keyed: impl IntoIterator<Item = (u64, E)>,
    ) {
        let mut groups: BTreeMap<u32, Vec<E>> = BTreeMap::new();
        for (hash, entry) in keyed {
            let g = u32::try_from(self.ckpt.group(hash)).unwrap_or(u32::MAX);
            groups.entry(g).or_default().push(entry);
        }
        let state = OperatorState {
            global: rmp_serde::to_vec(global).unwrap_or_default(),
            entries: groups.iter().map(|(g, v)| (*g, v.len() as u64)).collect(),
            groups: groups
                .into_iter()
                .map(|(g, v)| (g, rmp_serde::to_vec(&v).unwrap_or_default()))
                .collect(),
        };
        self.ckpt
            .taken
            .borrow_mut()
            .entry(batch)
            .or_default()
            .insert(self.name.clone(), state);
    }

    /// The state to start from, when restoring: every old worker's `global` value and the keyed
    /// entries of the key groups this worker owns now. `None` when not restoring.
    ///
    /// # Errors
    /// [`EngineError::Recovery`] when the saved state does not decode as this operator's.
    pub(crate) fn restore<G: DeserializeOwned, E: DeserializeOwned>(
        &self,
    ) -> Result<Option<(Vec<G>, Vec<E>)>> {
        let Some(parts) = &self.ckpt.restored else {
            return Ok(None);
        };
        let undecodable = |e: rmp_serde::decode::Error| {
            EngineError::Recovery(RecoveryError::State {
                operator: self.name.clone(),
                message: e.to_string(),
            })
        };
        let peers = self.ckpt.peers as u64;
        let mut globals = Vec::new();
        let mut entries = Vec::new();
        for state in parts.iter().filter_map(|p| p.operators.get(&self.name)) {
            globals.push(rmp_serde::from_slice(&state.global).map_err(undecodable)?);
            for (g, bytes) in &state.groups {
                if u64::from(*g) % peers == self.ckpt.worker as u64 {
                    let mut v: Vec<E> = rmp_serde::from_slice(bytes).map_err(undecodable)?;
                    entries.append(&mut v);
                }
            }
        }
        Ok(Some((globals, entries)))
    }
}
