//! [`ObjectCheckpointStore`]: the engine's [`CheckpointStore`] on object_store.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use clickpulse_engine::checkpoint::{CheckpointStore, StoreError};
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::OpenError;
use crate::error::PathError;
use crate::local::{self, LocalDisk, STAGING_DIR};
use crate::location::{self, Location, S3Location};
use crate::runtime::IoRuntime;

/// Checkpoint storage on a local directory or on S3-compatible storage, through object_store.
///
/// Objects are whole files (local) or whole S3 objects; paths are `/`-separated and relative to
/// the store's root (the directory, or the bucket and prefix). A path must be canonical: not
/// empty, no leading, trailing or doubled `/`, no `.` or `..` segment, nothing under
/// `.clickpulse-staging/` (see below).
///
/// **Atomic and durable puts.** On S3 a `PUT` is atomic and durable when it is acknowledged.
/// On a local directory a put writes the bytes to a staging file under `.clickpulse-staging/`,
/// fsyncs it, renames it into place and fsyncs its directory (and those created for it; the module docs
/// of `local.rs` say why object_store's own put is not enough). A local `delete` fsyncs the
/// directory too.
///
/// **What only a local directory refuses.** A path cannot be both an object and the directory
/// of another (`a` and `a/b`): S3 holds both, a filesystem cannot, so the second put fails. A
/// last segment `NAME#DIGITS` is refused: object_store keeps those names for its own staging
/// files. Layouts meant for both backends should avoid the two.
///
/// **Threads.** The store is `Send + Sync`; any number of threads may call it at once. Each
/// call runs on the store's private tokio runtime (two I/O threads) and blocks the caller until
/// it finishes, also when the caller is itself inside an async runtime. Two concurrent puts of
/// the same path leave one of the two objects, whole.
///
/// # Examples
/// ```
/// use clickpulse_checkpoint::ObjectCheckpointStore;
/// use clickpulse_engine::checkpoint::CheckpointStore;
///
/// let dir = tempfile::tempdir()?;
/// let store = ObjectCheckpointStore::open(&dir.path().join("ckpt").display().to_string())?;
/// store.put("batch-0002/manifest", b"{}".to_vec())?;
/// assert_eq!(store.list("batch-")?, vec!["batch-0002/manifest".to_string()]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ObjectCheckpointStore {
    objects: Arc<dyn ObjectStore>,
    /// Set for a local directory: where its files are, for the fsyncs.
    disk: Option<LocalDisk>,
    description: String,
    runtime: IoRuntime,
}

impl ObjectCheckpointStore {
    /// Opens the store at `location`:
    ///
    /// - a directory, relative or absolute (`clickpulse-data/checkpoints`), or a `file://` URL
    ///   (`file:///var/lib/clickpulse/checkpoints`); the directory and its missing parents are
    ///   created;
    /// - `s3://BUCKET/optional/prefix` (or `s3a://`), configured from the standard `AWS_*`
    ///   environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    ///   `AWS_ENDPOINT`, …) and then from the URL's query, whose keys are object_store's S3
    ///   settings: `endpoint`, `region`, `allow_http` and the others object_store knows
    ///   (`access_key_id`, `secret_access_key`, `virtual_hosted_style_request`, …); for example
    ///   `s3://ckpt/jobs/standard?endpoint=http://127.0.0.1:5000&region=us-east-1&allow_http=true`.
    ///   Credentials in a URL end up wherever the URL is written: keep them in the environment
    ///   outside tests. Opening does not contact S3; the first operation does.
    ///
    /// # Errors
    /// [`OpenError`] names what is wrong: an empty location, an unsupported scheme, a URL
    /// without a bucket, an unknown query option, S3 settings object_store rejects, a directory
    /// that cannot be created, or I/O threads that cannot be started.
    pub fn open(location: &str) -> Result<Self, OpenError> {
        let runtime = IoRuntime::start().map_err(|source| OpenError::Runtime { source })?;
        match location::parse(location)? {
            Location::Local(dir) => Self::open_local(&dir, runtime),
            Location::S3(s3) => Self::open_s3(s3, runtime),
        }
    }

    fn open_local(dir: &Path, runtime: IoRuntime) -> Result<Self, OpenError> {
        let create_error = |source| OpenError::CreateDirectory {
            dir: dir.to_path_buf(),
            source,
        };
        local::create_dir_durably(dir).map_err(create_error)?;
        let root = std::fs::canonicalize(dir).map_err(create_error)?;
        let files =
            LocalFileSystem::new_with_prefix(&root).map_err(|source| OpenError::LocalStore {
                dir: root.clone(),
                source,
            })?;
        let files = Arc::new(files);
        Ok(Self {
            disk: Some(LocalDisk::new(Arc::clone(&files))),
            objects: files,
            description: root.display().to_string(),
            runtime,
        })
    }

    fn open_s3(s3: S3Location, runtime: IoRuntime) -> Result<Self, OpenError> {
        let description = s3.describe();
        let mut builder = AmazonS3Builder::from_env();
        for (key, value) in s3.options {
            builder = builder.with_config(key, value);
        }
        // The URL's bucket wins over AWS_BUCKET and a `bucket` query option.
        let bucket = builder
            .with_bucket_name(s3.bucket)
            .build()
            .map_err(|source| OpenError::S3Config {
                location: description.clone(),
                source,
            })?;
        let objects: Arc<dyn ObjectStore> = if s3.prefix.as_ref().is_empty() {
            Arc::new(bucket)
        } else {
            Arc::new(PrefixStore::new(bucket, s3.prefix))
        };
        Ok(Self {
            objects,
            disk: None,
            description,
            runtime,
        })
    }

    /// Runs an object_store operation on the runtime; both its failure and the runtime's become
    /// [`StoreError::Io`].
    fn run<T, F>(&self, operation: &'static str, path: &str, future: F) -> Result<T, StoreError>
    where
        F: Future<Output = object_store::Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        self.runtime
            .run(future)
            .map_err(|e| self.io_error(operation, path, e))?
            .map_err(|e| self.io_error(operation, path, e))
    }

    fn io_error(
        &self,
        operation: &'static str,
        path: &str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> StoreError {
        StoreError::Io {
            store: self.description.clone(),
            operation,
            path: path.to_string(),
            source: source.into(),
        }
    }

    /// `path` as object_store's path, if the store accepts it.
    fn object_path(&self, operation: &'static str, path: &str) -> Result<ObjectPath, StoreError> {
        checked_path(path).map_err(|e| self.io_error(operation, path, e))
    }

    /// The local put: staged, fsynced, renamed into place, directories fsynced.
    fn put_local(
        &self,
        disk: &LocalDisk,
        path: &str,
        location: ObjectPath,
        bytes: Vec<u8>,
    ) -> Result<(), StoreError> {
        let staged = disk.staging_path();
        let (objects, to) = (Arc::clone(&self.objects), staged.clone());
        self.run("put", path, async move {
            objects.put(&to, PutPayload::from(bytes)).await
        })?;
        let committed = self.commit_staged(disk, path, &staged, &location);
        if committed.is_err() {
            // Best effort: the staging file is invisible anyway.
            let objects = Arc::clone(&self.objects);
            let _ = self.run("put", path, async move { objects.delete(&staged).await });
        }
        committed
    }

    fn commit_staged(
        &self,
        disk: &LocalDisk,
        path: &str,
        staged: &ObjectPath,
        location: &ObjectPath,
    ) -> Result<(), StoreError> {
        let file = |p: &ObjectPath| disk.file(p).map_err(|e| self.io_error("put", path, e));
        local::sync_file(&file(staged)?).map_err(|e| self.io_error("put", path, e))?;
        let target = file(location)?;
        // The directories the rename creates, and the first one that exists already (which gets
        // a new entry): fsyncing those makes the rename durable. Usually only the parent.
        let missing = target
            .ancestors()
            .skip(1)
            .take_while(|dir| !dir.exists())
            .count();
        let (objects, from, to) = (Arc::clone(&self.objects), staged.clone(), location.clone());
        self.run("put", path, async move { objects.rename(&from, &to).await })?;
        local::sync_parents(&target, missing + 1).map_err(|e| self.io_error("put", path, e))
    }

    /// Deletes the object; `false` when there was none.
    fn delete_object(&self, path: &str, location: ObjectPath) -> Result<bool, StoreError> {
        let objects = Arc::clone(&self.objects);
        self.run("delete", path, async move {
            match objects.delete(&location).await {
                Ok(()) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(e),
            }
        })
    }

    /// Deletes the file and fsyncs its directory, so that the object stays deleted.
    fn delete_local(
        &self,
        disk: &LocalDisk,
        path: &str,
        location: ObjectPath,
    ) -> Result<(), StoreError> {
        let file = disk
            .file(&location)
            .map_err(|e| self.io_error("delete", path, e))?;
        // A directory is no object: on S3 there would be nothing at that key either.
        if file.is_dir() || !self.delete_object(path, location)? {
            return Ok(());
        }
        // A directory three or more levels down holds one group of objects (a checkpoint's
        // parts): once its last object is gone it goes too, so old checkpoints leave nothing
        // behind. The top two levels (a generation and its `wal/`, `checkpoints/`) stay: other
        // writers put objects in them at any moment.
        let removed = path.split('/').count() >= 4 && remove_if_empty(&file);
        // Fsync the directory that lost an entry: the file's, or the one above the removed one.
        let lost_entry = match (removed, file.parent()) {
            (true, Some(dir)) => dir.to_path_buf(),
            _ => file.clone(),
        };
        local::sync_parents(&lost_entry, 1).map_err(|e| self.io_error("delete", path, e))
    }
}

/// Removes the directory holding `file` when it is empty; whether it did.
fn remove_if_empty(file: &std::path::Path) -> bool {
    file.parent()
        .is_some_and(|dir| std::fs::remove_dir(dir).is_ok())
}

/// Checks that `path` is one the store can hold and list back unchanged.
fn checked_path(path: &str) -> Result<ObjectPath, PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    let parsed = ObjectPath::parse(path).map_err(PathError::Invalid)?;
    if parsed.as_ref() != path {
        return Err(PathError::NotCanonical);
    }
    if is_staging(path) {
        return Err(PathError::Reserved);
    }
    Ok(parsed)
}

fn is_staging(path: &str) -> bool {
    path.strip_prefix(STAGING_DIR)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The deepest directory that holds every path starting with `prefix`: what object_store's
/// segment-wise listing can be asked for (`a/b/c` for `a/b/c/`, `a/b` for `a/b/cd`).
fn list_directory(prefix: &str) -> Option<&str> {
    prefix
        .rsplit_once('/')
        .map(|(dir, _)| dir.trim_end_matches('/'))
        .filter(|dir| !dir.is_empty())
}

impl CheckpointStore for ObjectCheckpointStore {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn put(&self, path: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let location = self.object_path("put", path)?;
        if let Some(disk) = &self.disk {
            return self.put_local(disk, path, location, bytes);
        }
        let objects = Arc::clone(&self.objects);
        self.run("put", path, async move {
            objects.put(&location, PutPayload::from(bytes)).await
        })?;
        Ok(())
    }

    fn get(&self, path: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let location = self.object_path("get", path)?;
        let objects = Arc::clone(&self.objects);
        let found = self.run("get", path, async move {
            match objects.get(&location).await {
                Ok(object) => object.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })?;
        Ok(found.map(Vec::from))
    }

    fn size(&self, path: &str) -> Result<Option<u64>, StoreError> {
        let location = self.object_path("head", path)?;
        let objects = Arc::clone(&self.objects);
        self.run("head", path, async move {
            match objects.head(&location).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let directory = match list_directory(prefix) {
            Some(dir) => Some(
                ObjectPath::parse(dir)
                    .map_err(|e| self.io_error("list", prefix, PathError::Invalid(e)))?,
            ),
            None => None,
        };
        let objects = Arc::clone(&self.objects);
        let found: Vec<_> = self.run("list", prefix, async move {
            objects.list(directory.as_ref()).try_collect().await
        })?;
        // object_store lists in no particular order (a local directory in the order the
        // filesystem returns; S3 by key, page by page).
        let mut paths: Vec<String> = found
            .into_iter()
            .map(|meta| meta.location.to_string())
            .filter(|p| p.starts_with(prefix) && !is_staging(p))
            .collect();
        paths.sort_unstable();
        Ok(paths)
    }

    fn delete(&self, path: &str) -> Result<(), StoreError> {
        let location = self.object_path("delete", path)?;
        match &self.disk {
            Some(disk) => self.delete_local(disk, path, location),
            None => self.delete_object(path, location).map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_canonical_and_outside_the_staging_directory() {
        assert!(checked_path("a/b/c").is_ok());
        assert!(checked_path(".clickpulse-staging-not/x").is_ok());
        assert!(matches!(checked_path(""), Err(PathError::Empty)));
        assert!(matches!(checked_path("/a"), Err(PathError::NotCanonical)));
        assert!(matches!(checked_path("a/"), Err(PathError::NotCanonical)));
        assert!(matches!(checked_path("a//b"), Err(PathError::Invalid(_))));
        assert!(matches!(checked_path("a/../b"), Err(PathError::Invalid(_))));
        assert!(matches!(
            checked_path(".clickpulse-staging/1-2-3"),
            Err(PathError::Reserved)
        ));
    }

    #[test]
    fn listing_asks_for_the_deepest_whole_directory() {
        assert_eq!(list_directory(""), None);
        assert_eq!(list_directory("batch-"), None);
        assert_eq!(list_directory("a/"), Some("a"));
        assert_eq!(list_directory("a/b/cd"), Some("a/b"));
        assert_eq!(list_directory("a//b"), Some("a"));
        assert_eq!(list_directory("/a"), None);
    }

    #[test]
    fn the_store_can_be_shared_between_threads() {
        fn shared<T: Send + Sync + 'static>() {}
        shared::<ObjectCheckpointStore>();
    }
}
