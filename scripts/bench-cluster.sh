#!/usr/bin/env bash
# Cluster-mode benchmark (docs/scale.md): the standard job over the full MSNBC day from the
# embedded log, as 1 process of 2 workers against 2 processes of 1 worker (and 1 process of 1
# worker, the per-core cost; 3 processes of 1 worker, more processes than cores) on this machine, alternated for ROUNDS rounds (default
# 3). For each run: wall time of the whole command (process start, connections and all), the
# job's own time, events/s, peak RSS of process 0, and the bytes the processes sent each other
# (from process 0's --json summary and the others' closing lines), per event; each layout without
# checkpoints and with them (the default: offset log every batch, a checkpoint every 10 s, in a
# fresh directory). Checks that every run wrote the same result files as the first.
# Uses target/release/clickpulse (BIN=… for another build).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN:-$root/target/release/clickpulse}
msnbc=$root/data/msnbc990928.seq.gz
[[ -x $bin ]] || { echo "build it first: cargo build --release -p clickpulse" >&2; exit 1; }
d=$(mktemp -d "${TMPDIR:-/tmp}/clickpulse-bench-cluster.XXXXXX")
trap 'rm -rf "$d"' EXIT
export RUST_LOG=warn CLICKPULSE__CHECKPOINT__ENABLED=false

echo "== replaying the full MSNBC day into the embedded log"
"$bin" replay --input "$msnbc" --log "$d/log" --durability none >/dev/null

# run NAME FLAGS...: runs the job, prints one line of figures.
run() {
  local name=$1
  shift
  rm -rf "$d/out"
  local t0 t1
  t0=$(date +%s.%N)
  "$bin" run --until-end --json --log "$d/log" --topic clicks --output-dir "$d/out" "$@" \
    >"$d/stdout" 2>"$d/stderr"
  t1=$(date +%s.%N)
  if [[ -d $d/first ]]; then
    diff -rq "$d/first" "$d/out" >/dev/null || { echo "$name wrote other results" >&2; exit 1; }
  else
    cp -r "$d/out" "$d/first"
  fi
  python3 - "$name" "$t0" "$t1" "$d/stdout" "$d/stderr" <<'PY'
import json, re, sys
name, t0, t1, out, err = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
r = json.loads(open(out).read().splitlines()[-1])
others = sum(int(m) for m in re.findall(r"sent (\d+) bytes to the other processes", open(err).read()))
sent = r.get("exchange_bytes_sent", 0) + others
wall = t1 - t0
print(f"{name:>22}: wall {wall:6.2f} s ({r['events']/wall:10,.0f} events/s), job {r['elapsed_s']:6.2f} s, "
      f"peak RSS p0 {(r.get('peak_rss_bytes') or 0) >> 20:4d} MiB, exchanged {sent/1e6:8.1f} MB "
      f"= {sent/r['events']:5.1f} bytes/event")
PY
}

ckpt() { echo "--checkpoint-dir $d/ck-$RANDOM$RANDOM"; }
# LAYOUTS picks the runs (default: all): 1x1 1x2 2x1 3x1 1x2c 2x1c (c: with checkpoints).
layouts=${LAYOUTS:-1x1 1x2 2x1 3x1 1x2c 2x1c}
for round in $(seq 1 "${ROUNDS:-3}"); do
  echo "== round $round"
  for layout in $layouts; do
    case $layout in
      1x1) run "1 process x 1 worker" --workers 1 ;;
      1x2) run "1 process x 2 workers" --workers 2 ;;
      2x1) run "2 processes x 1 worker" --workers 1 --local-processes 2 ;;
      3x1) run "3 processes x 1 worker" --workers 1 --local-processes 3 ;;
      # shellcheck disable=SC2046
      1x2c) CLICKPULSE__CHECKPOINT__ENABLED=true run "1x2, checkpoints" --workers 2 $(ckpt) ;;
      # shellcheck disable=SC2046
      2x1c) CLICKPULSE__CHECKPOINT__ENABLED=true run "2x1, checkpoints" --workers 1 \
        --local-processes 2 $(ckpt) ;;
      *) echo "unknown layout $layout" >&2; exit 1 ;;
    esac
  done
done
