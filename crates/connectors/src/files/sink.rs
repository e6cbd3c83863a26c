//! The JSON Lines result sink.

use std::path::{Path, PathBuf};

use super::direct::{BlockText, FileWriter, WriteMode, block_text};
use crate::result::{ResultBatch, ResultSink, SinkError};

/// Writes every result batch to `<dir>/<stream>/batch-<batch id, 12 digits>.jsonl`, each line one
/// row with its `batch` id added, atomically (temporary file, fsync, rename, directory fsync), so a
/// re-run batch (after a restart) writes the same name and bytes again. Batches with no rows
/// are not written. On Linux the files are written past the page cache (`O_DIRECT`) where the
/// file system allows it: the sink fsyncs each file at once and never reads it back, so the
/// kernel's copy of the text would buy nothing.
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
///     rows: vec![serde_json::json!({"url": "/news", "count": 2})].into(),
/// }).unwrap();
/// let text = std::fs::read_to_string(dir.path().join("page_views/batch-000000000003.jsonl")).unwrap();
/// assert_eq!(text, "{\"batch\":3,\"count\":2,\"url\":\"/news\"}\n");
/// ```
#[derive(Debug, Clone)]
pub struct JsonlSink {
    dir: PathBuf,
    /// The file being written, kept from file to file (aligned for direct writes).
    text: BlockText,
    writer: FileWriter,
}

impl JsonlSink {
    /// A sink writing under `dir` (created when needed).
    pub fn new(dir: impl AsRef<Path>) -> Self {
        JsonlSink {
            dir: dir.as_ref().to_path_buf(),
            text: block_text(),
            writer: FileWriter::new(if cfg!(target_os = "linux") {
                WriteMode::Direct
            } else {
                WriteMode::Buffered
            }),
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
        let path = self.path_for(&batch.stream, batch.batch);
        let error = |message: String| SinkError::Write {
            sink: format!("files ({})", path.display()),
            message,
        };
        let head = format!("{{\"batch\":{}", batch.batch);
        // Room for every line (a row's text plus at most its head, `,"value":`, `}` and a
        // newline), so a large batch is never copied into a grown buffer.
        let size: usize =
            batch.rows.text_len() + batch.rows.len() * (head.len() + ",\"value\":}\n".len());
        let text = &mut self.text;
        text.clear();
        // Room for the padding of a direct write too, so that it never copies the text.
        text.reserve(size.next_multiple_of(super::direct::BLOCK));
        for row in batch.rows.iter() {
            write_line(text, row, &head);
        }
        self.writer
            .write(&path, text)
            .map_err(|e| error(e.to_string()))
    }
}

/// Appends `row` with a leading `"batch"` field as one line: `head` (`{"batch":N`), a comma and the row's text
/// after its opening brace. A row that is not an object becomes `{"batch":N,"value":row}`.
fn write_line(out: &mut BlockText, row: &str, head: &str) {
    // JSON's whitespace is ASCII: no need to decode characters to trim it.
    let text = row.trim_ascii();
    out.extend_from_slice(head.as_bytes());
    match text.strip_prefix('{') {
        Some(rest) if rest.trim_ascii_start().starts_with('}') => out.push(b'}'),
        Some(rest) => {
            out.push(b',');
            out.extend_from_slice(rest.as_bytes());
        }
        None => {
            out.extend_from_slice(b",\"value\":");
            out.extend_from_slice(text.as_bytes());
            out.push(b'}');
        }
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use clickpulse_events::JsonRow;

    use super::{block_text, write_line};

    #[test]
    fn lines_lead_with_the_batch_whatever_the_row_looks_like() {
        let cases = [
            (
                r#"{"url":"/news","count":2}"#,
                r#"{"batch":7,"url":"/news","count":2}"#,
            ),
            (" \n{ }\t", r#"{"batch":7}"#),
            (r#" { "a" : [1, 2] } "#, r#"{"batch":7, "a" : [1, 2] }"#),
            ("[1,2]", r#"{"batch":7,"value":[1,2]}"#),
            (r#""é""#, r#"{"batch":7,"value":"é"}"#),
        ];
        for (row, line) in cases {
            let mut out = block_text();
            write_line(
                &mut out,
                JsonRow::from_text(row).unwrap().get(),
                r#"{"batch":7"#,
            );
            let text = String::from_utf8(out.to_vec()).unwrap();
            assert_eq!(text, format!("{line}\n"), "row {row:?}");
            let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(parsed["batch"], 7, "row {row:?}");
        }
    }
}
