//! # clickpulse-checkpoint
//!
//! Where the engine's checkpoints and offset log live: its
//! [`CheckpointStore`](clickpulse_engine::checkpoint::CheckpointStore) on the
//! [`object_store`] crate, for a local directory and for S3-compatible storage (AWS S3, MinIO,
//! Ceph, moto, …).
//!
//! | part | what it is |
//! |---|---|
//! | [`ObjectCheckpointStore`] | the store: [`open`](ObjectCheckpointStore::open) a directory, `file://` or `s3://` URL |
//! | [`OpenError`] | why a location could not be opened, saying what to fix |
//! | `local` (private) | the local put: staged, fsynced, renamed, directories fsynced |
//! | `location` (private) | parsing a location and its S3 settings |
//! | `runtime` (private) | the private tokio runtime the synchronous calls block on |
//!
//! Failures of an operation are the engine's
//! [`StoreError::Io`](clickpulse_engine::checkpoint::StoreError::Io): the store, the operation,
//! the path and object_store's (or the fsync's) error as its source.
//!
//! ```
//! use clickpulse_checkpoint::ObjectCheckpointStore;
//! use clickpulse_engine::checkpoint::CheckpointStore;
//!
//! let dir = tempfile::tempdir()?;
//! let store = ObjectCheckpointStore::open(&dir.path().display().to_string())?;
//! store.put("checkpoints/0001/manifest", b"one".to_vec())?;
//! store.put("checkpoints/0002/manifest", b"two".to_vec())?;
//! store.put("offsets/0002", b"17".to_vec())?;
//! assert_eq!(
//!     store.list("checkpoints/")?,
//!     ["checkpoints/0001/manifest", "checkpoints/0002/manifest"]
//! );
//! store.delete("checkpoints/0001/manifest")?;
//! assert_eq!(store.get("checkpoints/0001/manifest")?, None);
//! assert_eq!(store.get("offsets/0002")?.as_deref(), Some(&b"17"[..]));
//!
//! // S3-compatible storage: settings from AWS_* and the query; nothing is contacted yet.
//! let s3 = ObjectCheckpointStore::open(
//!     "s3://ckpt/jobs/standard?endpoint=http://127.0.0.1:5000&region=us-east-1&allow_http=true",
//! )?;
//! assert_eq!(s3.describe(), "s3://ckpt/jobs/standard (endpoint http://127.0.0.1:5000)");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

mod error;
mod local;
mod location;
mod runtime;
mod store;

pub use error::OpenError;
pub use store::ObjectCheckpointStore;
