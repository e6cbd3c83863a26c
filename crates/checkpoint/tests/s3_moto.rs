//! `ObjectCheckpointStore` on S3-compatible storage: a real moto server (`moto_server`, from
//! PyPI's `moto[server]`) on a free port, started through `scripts/s3-server.sh`. Without
//! moto the test says it was skipped and why; under `CI=true` that is a failure.
//! `scripts/s3-server.sh install` installs moto.
#![allow(clippy::unwrap_used, reason = "test helpers")]

mod common;

use clickpulse_checkpoint::ObjectCheckpointStore;
use clickpulse_engine::checkpoint::{CheckpointStore, StoreError};

const TEST: &str = "s3_moto";

use clickpulse_testkit::S3Server as Moto;

fn open(moto: &Moto, bucket: &str, prefix: &str) -> ObjectCheckpointStore {
    ObjectCheckpointStore::open(&moto.location(bucket, prefix)).unwrap()
}

#[test]
fn checkpoint_store_on_moto_s3() {
    let Some(moto) = Moto::start(TEST) else {
        return;
    };
    moto.create_bucket("ckpt");

    for (name, check) in common::CHECKS {
        let store = open(&moto, "ckpt", &format!("checks/{name}"));
        assert_eq!(
            store.describe(),
            format!(
                "s3://ckpt/checks/{name} (endpoint http://127.0.0.1:{})",
                moto.port()
            )
        );
        check(&store);
    }

    prefixes_keep_stores_apart(&moto);
    a_missing_bucket_is_an_io_error_naming_the_store(&moto);
}

fn prefixes_keep_stores_apart(moto: &Moto) {
    let a = open(moto, "ckpt", "tenants/a");
    let b = open(moto, "ckpt", "tenants/b");
    a.put("x", b"from a".to_vec()).unwrap();
    assert_eq!(b.list("").unwrap(), Vec::<String>::new());
    assert_eq!(b.get("x").unwrap(), None);
    let bucket = open(moto, "ckpt", "");
    assert_eq!(bucket.list("tenants/").unwrap(), ["tenants/a/x"]);
    assert_eq!(
        bucket.get("tenants/a/x").unwrap().as_deref(),
        Some(&b"from a"[..])
    );
}

fn a_missing_bucket_is_an_io_error_naming_the_store(moto: &Moto) {
    let store = open(moto, "no-such-bucket", "p");
    let err = store.put("x", b"x".to_vec()).unwrap_err();
    let StoreError::Io {
        store: name,
        operation,
        path,
        ..
    } = &err;
    assert!(name.starts_with("s3://no-such-bucket/p"), "{err}");
    assert_eq!((*operation, path.as_str()), ("put", "x"));
    assert!(
        std::error::Error::source(&err).is_some(),
        "no cause chained: {err}"
    );
}
