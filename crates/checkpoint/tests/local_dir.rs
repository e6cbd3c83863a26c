//! `ObjectCheckpointStore` on a local directory: the common checks, the files it leaves on disk,
//! and what opening a directory does.

mod common;

use clickpulse_checkpoint::{ObjectCheckpointStore, OpenError};
use clickpulse_engine::checkpoint::CheckpointStore;

fn open(dir: &std::path::Path) -> ObjectCheckpointStore {
    ObjectCheckpointStore::open(&dir.display().to_string()).expect("open the directory")
}

fn check(check: fn(&dyn CheckpointStore)) {
    let tmp = tempfile::tempdir().expect("temp dir");
    check(&open(tmp.path()));
}

#[test]
fn put_get_list_delete() {
    check(common::put_get_list_delete);
}

#[test]
fn overwrite_replaces_the_whole_object() {
    check(common::overwrite_replaces_the_whole_object);
}

#[test]
fn nested_paths() {
    check(common::nested_paths);
}

#[test]
fn list_is_sorted_and_filtered_by_string_prefix() {
    check(common::list_is_sorted_and_filtered_by_string_prefix);
}

#[test]
fn missing_objects_read_as_none_and_delete_quietly() {
    check(common::missing_objects_read_as_none_and_delete_quietly);
}

#[test]
fn invalid_paths_are_refused_with_the_store_and_operation() {
    check(common::invalid_paths_are_refused_with_the_store_and_operation);
}

#[test]
fn concurrent_puts_from_several_threads() {
    check(common::concurrent_puts_from_several_threads);
}

#[test]
fn objects_are_plain_files_and_no_staging_file_is_left_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    store.put("checkpoints/7/manifest", b"m7".to_vec()).unwrap();
    store
        .put("checkpoints/7/manifest", b"m7'".to_vec())
        .unwrap();
    let file = tmp.path().join("checkpoints/7/manifest");
    assert_eq!(std::fs::read(file).unwrap(), b"m7'");
    let staging = tmp.path().join(".clickpulse-staging");
    let left: Vec<_> = std::fs::read_dir(staging).unwrap().collect();
    assert!(left.is_empty(), "staging files left: {left:?}");
    assert_eq!(
        std::fs::read_dir(tmp.path().join("checkpoints/7"))
            .unwrap()
            .count(),
        1,
        "object_store's `#N` staging files left next to the object"
    );
}

#[test]
fn an_object_cannot_also_be_a_directory_on_disk() {
    // S3 holds both `a` and `a/b`; a filesystem cannot, so the second put fails, whole.
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    store.put("a", b"file".to_vec()).unwrap();
    let err = store.put("a/b", b"below a file".to_vec()).unwrap_err();
    assert!(err.to_string().contains("put `a/b`"), "{err}");
    store.put("c/d", b"below a directory".to_vec()).unwrap();
    assert!(store.put("c", b"over a directory".to_vec()).is_err());
    assert_eq!(store.list("").unwrap(), ["a", "c/d"]);
    assert_eq!(store.get("a").unwrap().as_deref(), Some(&b"file"[..]));
    let staging = tmp.path().join(".clickpulse-staging");
    let left: Vec<_> = std::fs::read_dir(staging).unwrap().collect();
    assert!(left.is_empty(), "failed puts left staging files: {left:?}");
}

#[test]
fn names_ending_in_hash_digits_are_refused_on_disk() {
    // object_store's LocalFileSystem keeps `NAME#N` for its own staging files.
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    assert!(store.put("manifest#1", b"x".to_vec()).is_err());
    store.put("manifest#v1", b"x".to_vec()).unwrap();
    assert_eq!(store.list("").unwrap(), ["manifest#v1"]);
}

#[test]
fn open_creates_missing_directories_and_file_urls_name_the_same_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a/b/checkpoints");
    let store = open(&dir);
    assert!(dir.is_dir());
    assert_eq!(
        store.describe(),
        dir.canonicalize().unwrap().display().to_string()
    );
    store.put("x", b"1".to_vec()).unwrap();
    let by_url = ObjectCheckpointStore::open(&format!("file://{}", dir.display())).unwrap();
    assert_eq!(by_url.get("x").unwrap().as_deref(), Some(&b"1"[..]));
}

#[test]
fn open_names_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-directory");
    std::fs::write(&file, b"").unwrap();
    let err = ObjectCheckpointStore::open(&file.display().to_string()).unwrap_err();
    assert!(
        matches!(&err, OpenError::CreateDirectory { dir, .. } if *dir == file),
        "{err:?}"
    );
    let err = ObjectCheckpointStore::open("gs://bucket/x").unwrap_err();
    assert!(
        matches!(err, OpenError::UnsupportedScheme { .. }),
        "{err:?}"
    );
    let err = ObjectCheckpointStore::open("s3://b/p?allow_http=maybe").unwrap_err();
    assert!(matches!(err, OpenError::S3Config { .. }), "{err:?}");
}

#[test]
fn works_when_called_and_dropped_inside_an_async_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let got = runtime.block_on(async {
        let store = open(tmp.path());
        store.put("a", b"async".to_vec()).unwrap();
        store.get("a").unwrap()
    });
    assert_eq!(got.as_deref(), Some(&b"async"[..]));
}
