#!/usr/bin/env bash
# Replay and ingestion benchmarks (docs/benchmarks.md, "Replay"):
#   1. `clickpulse replay` of full MSNBC with each durability (group, batch, none), and the
#      standard job over the same log (`run --until-end`, 7 streams to files, 2 workers),
#      alternated for ROUNDS rounds (default 3): wall time, events/s, fsyncs and peak RSS of
#      each command (peak RSS from the commands' own --json summaries, Linux VmHWM);
#   2. replay of a generated MSNBC file ten times larger (every visit line ten times): peak
#      memory against the real file's.
# Uses target/release/clickpulse (BIN=… for another build).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN:-$root/target/release/clickpulse}
msnbc=$root/data/msnbc990928.seq.gz
[[ -x $bin ]] || { echo "build it first: cargo build --release -p clickpulse" >&2; exit 1; }
d=$(mktemp -d "${TMPDIR:-/tmp}/clickpulse-bench-replay.XXXXXX")
trap 'rm -rf "$d"' EXIT
export RUST_LOG=warn CLICKPULSE__CHECKPOINT__ENABLED=false

# Runs a command, prints "<wall s> <peak RSS MiB>" for it on fd 3; its stdout goes to $d/out.
measure() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >"$d/out" 2>"$d/err"
  t1=$(date +%s.%N)
  local rss
  rss=$(python3 -c 'import json,sys; print((json.loads(open(sys.argv[1]).read().splitlines()[-1]).get("peak_rss_bytes") or 0) >> 20)' "$d/out" 2>/dev/null || echo "?")
  echo "$(python3 -c "print(f'{$t1-$t0:.3f}')") $rss"
}

summary() {
  python3 -c '
import json, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
print("%d events, %.0f events/s wall, appends alone %.0f events/s, fsyncs %s, peak RSS %d MiB, allocator peak %d MiB"
      % (r["events"], r["events_per_s"], r["write_events_per_s"], r.get("fsyncs"),
         (r.get("peak_rss_bytes") or 0) >> 20, (r.get("peak_alloc_bytes") or 0) >> 20))' "$d/out"
}

echo "== replay (full MSNBC, 4 partitions) and the job over it, round by round"
for round in $(seq 1 "${ROUNDS:-3}"); do
  for durability in group batch none; do
    rm -rf "$d/log"
    read -r wall _ < <(measure "$bin" replay --input "$msnbc" --log "$d/log" --durability "$durability" --json)
    echo "round $round  replay --durability $durability: $wall s; $(summary)"
  done
  rm -rf "$d/job"
  read -r wall rss < <(measure "$bin" run --until-end --json --log "$d/log" --topic clicks \
    --workers 2 --output-dir "$d/job")
  echo "round $round  run --until-end (2 workers, 7 streams to files): $wall s, peak RSS $rss MiB"
done

echo "== a ten times larger file"
python3 - "$msnbc" "$d/ten.seq" <<'PY'
import gzip, sys
with gzip.open(sys.argv[1], "rt") as f:
    text = f.read()
head, body = text.split("% Sequences:", 1)
visits = [l for l in body.splitlines() if l.strip()]
with open(sys.argv[2], "w") as out:
    out.write(head + "% Sequences:\n")
    for _ in range(10):
        out.write("\n".join(visits) + "\n")
PY
ls -l "$d/ten.seq" | awk '{printf "generated %s: %.0f MB\n", $NF, $5/1e6}'
for input in "$msnbc" "$d/ten.seq"; do
  rm -rf "$d/log"
  read -r wall _ < <(measure "$bin" replay --input "$input" --log "$d/log" --json)
  echo "replay $(basename "$input"): $wall s; $(summary)"
done
