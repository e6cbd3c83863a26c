//! Where checkpoints and the offset log live: a small, synchronous object-store interface.
//!
//! The engine writes whole objects only (no appends, no in-place updates), so the same code
//! works on a local directory and on S3-compatible storage. The `clickpulse-checkpoint` crate
//! implements [`CheckpointStore`] on the `object_store` crate; [`MemoryStore`] is for tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A failure of the checkpoint storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage could not be reached or refused the request. Retrying may help (network,
    /// throttling); if it persists the operator must look at the storage (permissions, disk).
    #[error("checkpoint storage {store}: {operation} `{path}` failed: {source}")]
    Io {
        /// Which store (its URL or directory).
        store: String,
        /// What was attempted (`put`, `get`, `list`, `delete`).
        operation: &'static str,
        /// The object's path within the store.
        path: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Objects by path (`/`-separated, relative to the store's root).
///
/// Implementations must make [`put`](CheckpointStore::put) atomic (a reader sees the whole old
/// object, the whole new one, or none) and durable when it returns (fsync of the file and of its
/// directory on a local disk), because a checkpoint's manifest is visible only once its `put`
/// returned.
pub trait CheckpointStore: Send + Sync + 'static {
    /// A human-readable description (directory or URL) for logs and errors.
    fn describe(&self) -> String;

    /// Writes `bytes` at `path`, replacing any object there, atomically and durably.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the object could not be written.
    fn put(&self, path: &str, bytes: Vec<u8>) -> Result<(), StoreError>;

    /// The object at `path`, or `None` when there is none.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the storage could not be read.
    fn get(&self, path: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// The paths of every object whose path starts with `prefix`, in lexicographic order.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the storage could not be listed.
    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;

    /// The size in bytes of the object at `path`, or `None` when there is none. The default reads
    /// the object; stores that can ask for the size alone should.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the storage could not be read.
    fn size(&self, path: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.get(path)?.map(|b| b.len() as u64))
    }

    /// Removes the object at `path`; removing a missing object is not an error.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the object could not be removed.
    fn delete(&self, path: &str) -> Result<(), StoreError>;
}

/// A store in memory (for tests and examples); clones share their objects.
///
/// # Examples
/// ```
/// use clickpulse_engine::checkpoint::{CheckpointStore, MemoryStore};
/// let store = MemoryStore::default();
/// store.put("a/1", b"one".to_vec()).unwrap();
/// store.put("b/2", b"two".to_vec()).unwrap();
/// assert_eq!(store.list("a/").unwrap(), vec!["a/1".to_string()]);
/// assert_eq!(store.get("b/2").unwrap().as_deref(), Some(&b"two"[..]));
/// store.delete("b/2").unwrap();
/// assert_eq!(store.get("b/2").unwrap(), None);
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    objects: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
}

impl MemoryStore {
    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl CheckpointStore for MemoryStore {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn put(&self, path: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.objects().insert(path.to_string(), bytes);
        Ok(())
    }

    fn get(&self, path: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.objects().get(path).cloned())
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .objects()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }

    fn delete(&self, path: &str) -> Result<(), StoreError> {
        self.objects().remove(path);
        Ok(())
    }
}
