//! The checks every checkpoint store passes, on a local directory and on S3 alike. Each takes
//! a fresh, empty store and panics on the first difference from the engine's contract (the
//! contract `MemoryStore` is the plain model of).

#![allow(dead_code, reason = "each test binary uses its own subset")]
#![allow(clippy::unwrap_used, reason = "checks called by tests")]

use clickpulse_engine::checkpoint::{CheckpointStore, MemoryStore, StoreError};

/// Every check, by name (the S3 test runs each under a prefix of that name).
pub const CHECKS: &[(&str, fn(&dyn CheckpointStore))] = &[
    ("put_get_list_delete", put_get_list_delete),
    ("overwrite", overwrite_replaces_the_whole_object),
    ("nested", nested_paths),
    ("ordering", list_is_sorted_and_filtered_by_string_prefix),
    ("missing", missing_objects_read_as_none_and_delete_quietly),
    (
        "invalid",
        invalid_paths_are_refused_with_the_store_and_operation,
    ),
    ("concurrent", concurrent_puts_from_several_threads),
];

pub fn put_get_list_delete(store: &dyn CheckpointStore) {
    let every_byte: Vec<u8> = (0..=255).collect();
    store.put("a", b"one".to_vec()).unwrap();
    store.put("b", every_byte.clone()).unwrap();
    store.put("empty", Vec::new()).unwrap();
    assert_eq!(store.get("a").unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(store.get("b").unwrap(), Some(every_byte));
    assert_eq!(store.get("empty").unwrap(), Some(Vec::new()));
    assert_eq!(store.list("").unwrap(), ["a", "b", "empty"]);
    store.delete("a").unwrap();
    assert_eq!(store.get("a").unwrap(), None);
    assert_eq!(store.list("").unwrap(), ["b", "empty"]);
}

pub fn overwrite_replaces_the_whole_object(store: &dyn CheckpointStore) {
    store.put("manifest", vec![b'L'; 100_000]).unwrap();
    store.put("manifest", b"short".to_vec()).unwrap();
    assert_eq!(
        store.get("manifest").unwrap().as_deref(),
        Some(&b"short"[..])
    );
    store.put("manifest", vec![b'M'; 70_000]).unwrap();
    assert_eq!(store.get("manifest").unwrap(), Some(vec![b'M'; 70_000]));
    assert_eq!(store.list("").unwrap(), ["manifest"]);
}

pub fn nested_paths(store: &dyn CheckpointStore) {
    let deep = "jobs/standard/checkpoints/0000000042/worker-0/state";
    store.put(deep, b"state".to_vec()).unwrap();
    store
        .put(
            "jobs/standard/checkpoints/0000000042/manifest",
            b"m".to_vec(),
        )
        .unwrap();
    assert_eq!(store.get(deep).unwrap().as_deref(), Some(&b"state"[..]));
    assert_eq!(
        store.list("jobs/standard/").unwrap(),
        [
            "jobs/standard/checkpoints/0000000042/manifest",
            "jobs/standard/checkpoints/0000000042/worker-0/state",
        ]
    );
    // A directory on disk, a key prefix on S3: not an object either way.
    assert_eq!(store.get("jobs/standard").unwrap(), None);
    store.delete("jobs/standard").unwrap();
    store.delete(deep).unwrap();
    assert_eq!(
        store.list("jobs/").unwrap(),
        ["jobs/standard/checkpoints/0000000042/manifest"]
    );
}

pub fn list_is_sorted_and_filtered_by_string_prefix(store: &dyn CheckpointStore) {
    let model = MemoryStore::default();
    // Written out of order; `-` (0x2d) sorts before `/` (0x2f). No path is also another's
    // directory (`a/1` and `a/1/z`): a local directory cannot hold both.
    for path in ["b", "a/2", "c/x/y", "a/10", "ab", "a/1", "a-", "a/11/z"] {
        store.put(path, path.as_bytes().to_vec()).unwrap();
        model.put(path, path.as_bytes().to_vec()).unwrap();
    }
    for prefix in [
        "", "a", "a/", "a/1", "a/1/", "ab", "c/x/", "c/x/y/", "zzz", "/a",
    ] {
        assert_eq!(
            store.list(prefix).unwrap(),
            model.list(prefix).unwrap(),
            "list({prefix:?})"
        );
    }
    assert_eq!(
        store.list("a").unwrap(),
        ["a-", "a/1", "a/10", "a/11/z", "a/2", "ab"]
    );
}

pub fn missing_objects_read_as_none_and_delete_quietly(store: &dyn CheckpointStore) {
    assert_eq!(store.get("nothing").unwrap(), None);
    assert_eq!(store.get("no/such/directory/x").unwrap(), None);
    store.delete("nothing").unwrap();
    store.delete("no/such/directory/x").unwrap();
    assert_eq!(store.list("").unwrap(), Vec::<String>::new());
    assert_eq!(store.list("no/such/").unwrap(), Vec::<String>::new());
}

pub fn invalid_paths_are_refused_with_the_store_and_operation(store: &dyn CheckpointStore) {
    for path in ["", "/a", "a/", "a//b", "a/../b", ".clickpulse-staging/x"] {
        let err = store.put(path, b"x".to_vec()).unwrap_err();
        let StoreError::Io {
            store: name,
            operation,
            path: named,
            ..
        } = &err;
        assert_eq!(name, &store.describe());
        assert_eq!((*operation, named.as_str()), ("put", path));
        assert!(
            std::error::Error::source(&err).is_some(),
            "no cause chained: {err}"
        );
    }
    assert_eq!(store.list("").unwrap(), Vec::<String>::new());
}

pub fn concurrent_puts_from_several_threads(store: &dyn CheckpointStore) {
    const THREADS: u8 = 6;
    const PUTS: usize = 15;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            s.spawn(move || {
                for i in 0..PUTS {
                    let path = format!("worker-{t}/part-{i:03}");
                    store.put(&path, path.as_bytes().to_vec()).unwrap();
                    // Every thread also races for one object; each write is 64 KiB of its id.
                    store.put("contended", vec![t; 64 * 1024]).unwrap();
                }
            });
        }
    });
    let paths = store.list("worker-").unwrap();
    assert_eq!(paths.len(), usize::from(THREADS) * PUTS);
    for path in &paths {
        assert_eq!(store.get(path).unwrap().as_deref(), Some(path.as_bytes()));
    }
    let contended = store.get("contended").unwrap().unwrap();
    assert_eq!(contended.len(), 64 * 1024);
    assert!(
        contended.iter().all(|&b| b == contended[0]) && contended[0] < THREADS,
        "the contended object mixes writes"
    );
}
