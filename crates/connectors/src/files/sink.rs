//! The JSON Lines result sink.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::result::{ResultBatch, ResultSink, SinkError};

/// Writes every result batch to `<dir>/<stream>/batch-<batch id, 12 digits>.jsonl`, each line one
/// row with its `batch` id added, atomically (temporary file, fsync, rename). Batches with no rows
/// are not written.
///
/// # Examples
/// ```
/// use clickpulse_connectors::{ResultBatch, ResultSink, files::JsonlSink};
/// let dir = tempfile::tempdir().unwrap();
/// let mut sink = JsonlSink::new(dir.path());
/// sink.write(&ResultBatch {
///     stream: "page_views".into(),
///     batch: 3,
///     window_start_ms: Some(0),
///     window_end_ms: Some(1000),
///     rows: vec![serde_json::json!({"url": "/news", "count": 2})],
/// }).unwrap();
/// let text = std::fs::read_to_string(dir.path().join("page_views/batch-000000000003.jsonl")).unwrap();
/// assert_eq!(text, "{\"batch\":3,\"count\":2,\"url\":\"/news\"}\n");
/// ```
#[derive(Debug, Clone)]
pub struct JsonlSink {
    dir: PathBuf,
}

impl JsonlSink {
    /// A sink writing under `dir` (created when needed).
    pub fn new(dir: impl AsRef<Path>) -> Self {
        JsonlSink {
            dir: dir.as_ref().to_path_buf(),
        }
    }

    /// The file a stream's batch goes to.
    pub fn path_for(&self, stream: &str, batch: u64) -> PathBuf {
        self.dir
            .join(stream)
            .join(format!("batch-{batch:012}.jsonl"))
    }
}

impl ResultSink for JsonlSink {
    fn name(&self) -> &str {
        "files"
    }

    fn write(&mut self, batch: &ResultBatch) -> Result<(), SinkError> {
        if batch.rows.is_empty() {
            return Ok(());
        }
        let rows: Vec<Value> = batch
            .rows
            .iter()
            .map(|row| with_batch(row, batch.batch))
            .collect();
        let path = self.path_for(&batch.stream, batch.batch);
        clickpulse_engine::write_json_lines_atomically(&path, &rows).map_err(|e| SinkError::Write {
            sink: format!("files ({})", path.display()),
            message: e.to_string(),
        })
    }
}

fn with_batch(row: &Value, batch: u64) -> Value {
    match row {
        Value::Object(map) => {
            let mut map = map.clone();
            map.insert("batch".into(), Value::from(batch));
            Value::Object(map)
        }
        other => serde_json::json!({ "batch": batch, "value": other }),
    }
}
