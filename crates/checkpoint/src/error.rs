//! Why a store could not be opened ([`OpenError`]), and the private causes chained under the
//! engine's [`StoreError`](clickpulse_engine::checkpoint::StoreError).

use std::path::PathBuf;

use crate::local::STAGING_DIR;

/// Why [`ObjectCheckpointStore::open`](crate::ObjectCheckpointStore::open) failed.
///
/// Every variant but [`Runtime`](OpenError::Runtime) is a configuration or permission problem:
/// retrying the same location will not help; the operator must fix the location, the
/// environment (`AWS_*` variables) or the directory. Locations in these errors never include
/// the URL's query, which may hold credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The location is the empty string.
    #[error("the checkpoint location is empty: name a directory, a file:// URL or an s3:// URL")]
    Empty,

    /// The location is a URL whose scheme this crate does not store checkpoints on.
    #[error(
        "checkpoint location `{location}`: unsupported scheme `{scheme}` \
         (use a directory, file:///DIR or s3://BUCKET/PREFIX)"
    )]
    UnsupportedScheme {
        /// The location, without its query.
        location: String,
        /// The scheme found, such as `gs` or `http`.
        scheme: String,
    },

    /// The location looks like a URL but does not parse as one.
    #[error("checkpoint location `{location}` is not a valid URL: {source}")]
    InvalidUrl {
        /// The location, without its query.
        location: String,
        /// What the URL parser said.
        #[source]
        source: url::ParseError,
    },

    /// A `file://` URL that names no local directory (it has a host, or no absolute path).
    #[error(
        "checkpoint location `{location}` names no local directory (write file:///ABSOLUTE/DIR)"
    )]
    NotALocalPath {
        /// The location, without its query.
        location: String,
    },

    /// An `s3://` URL without a bucket.
    #[error("checkpoint location `{location}` names no bucket (write s3://BUCKET/optional/prefix)")]
    MissingBucket {
        /// The location, without its query.
        location: String,
    },

    /// The prefix after the bucket is not a valid object path (an empty segment, `.` or `..`,
    /// a control character).
    #[error("checkpoint location `{location}`: the prefix is not a valid object path: {source}")]
    InvalidPrefix {
        /// The location, without its query.
        location: String,
        /// What object_store objected to.
        #[source]
        source: object_store::path::Error,
    },

    /// A query parameter that is not an S3 setting of object_store.
    #[error(
        "checkpoint location `{location}`: unknown option `{key}` (use endpoint, region, \
         allow_http or another object_store S3 setting)"
    )]
    UnknownOption {
        /// The location, without its query.
        location: String,
        /// The unknown parameter's name.
        key: String,
    },

    /// object_store rejected the S3 settings from the URL and the `AWS_*` environment, such as
    /// `allow_http=maybe` or an endpoint that is not a URL.
    #[error("checkpoint location `{location}`: the S3 settings are rejected: {source}")]
    S3Config {
        /// The location, without its query.
        location: String,
        /// What object_store said.
        #[source]
        source: object_store::Error,
    },

    /// The local directory could not be created or resolved (permissions, a file in the way).
    #[error("cannot create checkpoint directory {}: {source}", dir.display())]
    CreateDirectory {
        /// The directory as given.
        dir: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// object_store refused the local directory.
    #[error("cannot use checkpoint directory {}: {source}", dir.display())]
    LocalStore {
        /// The directory, resolved.
        dir: PathBuf,
        /// What object_store said.
        #[source]
        source: object_store::Error,
    },

    /// The store's I/O threads could not be started (the process is out of threads or memory);
    /// retrying later may help.
    #[error("cannot start the checkpoint store's I/O threads: {source}")]
    Runtime {
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// An object path the store refuses before touching the storage.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PathError {
    /// Paths name an object; the store's root is not one.
    #[error("the object path is empty")]
    Empty,
    /// object_store's rules: no empty segment, no `.` or `..`, no control character.
    #[error("not a valid object path: {0}")]
    Invalid(#[source] object_store::path::Error),
    /// `a/`, `/a` and `a//b` would silently become other paths.
    #[error("the object path is not canonical (a leading, trailing or doubled `/`)")]
    NotCanonical,
    /// Staging files live there on a local disk.
    #[error("paths under `{STAGING_DIR}/` are reserved for the store's staging files")]
    Reserved,
}

/// A failed fsync, naming the file or directory.
#[derive(Debug, thiserror::Error)]
#[error("fsync of {} failed", path.display())]
pub(crate) struct SyncError {
    /// The file or directory synced.
    pub(crate) path: PathBuf,
    /// The operating system's error.
    #[source]
    pub(crate) source: std::io::Error,
}

/// The store's private I/O runtime could not run an operation.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RuntimeError {
    /// Only while the store is being dropped.
    #[error("the checkpoint store's I/O runtime has stopped")]
    Stopped,
    /// The operation's task panicked or was cancelled.
    #[error("the checkpoint store's I/O task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}
