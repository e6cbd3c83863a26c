//! `clickpulse state`: reads a job's newest checkpoint without running the job, like Spark's
//! state data source. Read-only: it never writes to the checkpoint storage.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context;
use clap::Args;
use clickpulse_checkpoint::ObjectCheckpointStore;
use clickpulse_engine::checkpoint::{Manifest, WorkerPart, inspect};
use serde_json::{Value, json};

/// `clickpulse state`
#[derive(Debug, Args)]
pub struct StateArgs {
    /// The job's checkpoint storage: a directory or s3://BUCKET/PREFIX?... (as `run
    /// --checkpoint-dir`; default clickpulse-data/checkpoints/standard).
    #[arg(
        long,
        value_name = "DIR|URL",
        default_value = "clickpulse-data/checkpoints/standard"
    )]
    checkpoint_dir: String,
    /// Print this operator's entries as JSON Lines (`{"group": G, "entry": [KEY, ...]}`)
    /// instead of the list of operators.
    #[arg(long)]
    operator: Option<String>,
    /// With --operator: only the entries whose key (an entry's first element) is K, compared
    /// as text.
    #[arg(long, value_name = "K", requires = "operator")]
    key: Option<String>,
    /// Print the list as JSON Lines: the checkpoint first, then one line per operator.
    #[arg(long)]
    json: bool,
}

/// Per operator: entries, bytes and the unkeyed state of worker 0.
#[derive(Debug, Default)]
struct OperatorSummary {
    keys: u64,
    bytes: u64,
    global: Option<Value>,
}

/// Runs `clickpulse state`.
pub fn run(args: StateArgs) -> anyhow::Result<()> {
    let store = ObjectCheckpointStore::open(&args.checkpoint_dir)
        .with_context(|| format!("opening {}", args.checkpoint_dir))?;
    let (manifest, parts) = inspect(&store)?.with_context(|| {
        format!(
            "no complete checkpoint in {} (is it the job's --checkpoint-dir?)",
            args.checkpoint_dir
        )
    })?;
    let mut out = std::io::stdout().lock();
    let printed = match &args.operator {
        Some(name) => print_entries(&mut out, &parts, name, args.key.as_deref()),
        None if args.json => print_json(&mut out, &manifest, &summaries(&parts)?),
        None => print_table(
            &mut out,
            &args.checkpoint_dir,
            &manifest,
            &summaries(&parts)?,
        ),
    };
    match printed {
        // A reader that has seen enough (`| head`) is no failure.
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

fn summaries(parts: &[WorkerPart]) -> anyhow::Result<BTreeMap<String, OperatorSummary>> {
    let mut ops: BTreeMap<String, OperatorSummary> = BTreeMap::new();
    for part in parts {
        for (name, state) in &part.operators {
            let s = ops.entry(name.clone()).or_default();
            s.keys += state.entries.values().sum::<u64>();
            s.bytes +=
                (state.global.len() + state.groups.values().map(Vec::len).sum::<usize>()) as u64;
            if s.global.is_none() {
                s.global = Some(state.global_json()?);
            }
        }
    }
    Ok(ops)
}

fn manifest_json(m: &Manifest) -> Value {
    json!({
        "batch": m.batch,
        "workers": m.workers,
        "key_groups": m.key_groups,
        "bytes": m.bytes,
        "created_ms": m.created_ms,
        "positions": m.positions,
        "fingerprint": m.fingerprint,
    })
}

fn print_json(
    out: &mut impl Write,
    manifest: &Manifest,
    ops: &BTreeMap<String, OperatorSummary>,
) -> anyhow::Result<()> {
    writeln!(out, "{}", json!({ "checkpoint": manifest_json(manifest) }))?;
    for (name, s) in ops {
        let line = json!({"operator": name, "keys": s.keys, "bytes": s.bytes, "global": s.global});
        writeln!(out, "{line}")?;
    }
    Ok(())
}

fn print_table(
    out: &mut impl Write,
    location: &str,
    m: &Manifest,
    ops: &BTreeMap<String, OperatorSummary>,
) -> anyhow::Result<()> {
    writeln!(
        out,
        "checkpoint of batch {} in {location}: {} workers, {} key groups, {} bytes",
        m.batch, m.workers, m.key_groups, m.bytes
    )?;
    for p in &m.positions {
        let max_ts = p.max_ts.map_or("-".to_string(), |t| t.to_string());
        writeln!(
            out,
            "  input {} partition {}: next offset {}, highest event time {max_ts}",
            p.source, p.partition, p.next_offset
        )?;
    }
    writeln!(out, "{:<40} {:>12} {:>14}", "operator", "keys", "bytes")?;
    for (name, s) in ops {
        writeln!(out, "{name:<40} {:>12} {:>14}", s.keys, s.bytes)?;
    }
    Ok(())
}

fn print_entries(
    out: &mut impl Write,
    parts: &[WorkerPart],
    name: &str,
    key: Option<&str>,
) -> anyhow::Result<()> {
    let states: Vec<_> = parts.iter().filter_map(|p| p.operators.get(name)).collect();
    if states.is_empty() {
        let known: std::collections::BTreeSet<&String> =
            parts.iter().flat_map(|p| p.operators.keys()).collect();
        let known: Vec<&str> = known.into_iter().map(String::as_str).collect();
        anyhow::bail!(
            "no operator `{name}` in this checkpoint; it has: {}",
            known.join(", ")
        );
    }
    for state in states {
        for (group, entry) in state.entries_json()? {
            if key.is_some_and(|k| !key_matches(&entry, k)) {
                continue;
            }
            writeln!(out, "{}", json!({"group": group, "entry": entry}))?;
        }
    }
    Ok(())
}

/// Whether an entry's key (its first element) is `k`: a string key by its text, any other by
/// its JSON text.
fn key_matches(entry: &Value, k: &str) -> bool {
    match entry.get(0) {
        Some(Value::String(s)) => s == k,
        Some(other) => {
            // Its JSON text: `*other == k` would compare only string values.
            let text = other.to_string();
            text == k
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::key_matches;
    use serde_json::json;

    #[test]
    fn keys_match_by_text() {
        assert!(key_matches(&json!(["v7", 3]), "v7"));
        assert!(!key_matches(&json!(["v70", 3]), "v7"));
        assert!(key_matches(&json!([42, "x"]), "42"));
        assert!(key_matches(&json!([[1, "a"], 2]), "[1,\"a\"]"));
        assert!(!key_matches(&json!({}), "x"));
    }
}
