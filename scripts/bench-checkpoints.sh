#!/usr/bin/env bash
# Checkpoint benchmarks (docs/benchmarks.md, "Checkpoints"):
#   1. whole-job throughput over full MSNBC with checkpoints off, every 10 batches, every batch
#      and every second, alternated for ROUNDS rounds (default 6);
#   2. the day in 5,000-record batches with a checkpoint after every batch the writer can take
#      (sizes over the day), then runs stopped with SIGTERM part-way and started again (restore
#      time, time to the first new batch).
# Uses target/release/clickpulse (BIN=… for another build).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN:-$root/target/release/clickpulse}
msnbc=$root/data/msnbc990928.seq.gz
[[ -x $bin ]] || { echo "build it first: cargo build --release -p clickpulse" >&2; exit 1; }

echo "== throughput (events/s), round by round"
for round in $(seq 1 "${ROUNDS:-6}"); do
  for mode in none 10 1 1s; do
    args=(); [[ $mode != none ]] && args=(--checkpoint-interval "$mode")
    out=$("$bin" bench job --workers 2 --input "$msnbc" "${args[@]}" 2>/dev/null)
    rate=$(grep 'standard job' <<<"$out" | sed -E 's/.*= ([0-9]+) events\/s/\1/')
    ck=$(grep 'checkpoints written' <<<"$out" | sed -E 's/ +checkpoints written +: //' || true)
    echo "round $round  $mode  $rate  $ck"
  done
done

echo "== size, restore and restart"
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
export CLICKPULSE__ENGINE__MAX_RECORDS_PER_PARTITION=5000 RUST_LOG=warn
"$bin" replay --input "$msnbc" --log "$d/log" --topic clicks >/dev/null 2>&1
run() { "$bin" run --until-end --json --log "$d/log" --topic clicks "$@" 2>/dev/null | tail -1; }
run --output-dir "$d/out1" --checkpoint-dir "$d/ck1" --checkpoint-interval 1 | python3 -c '
import json, sys
r = json.load(sys.stdin); c = r["checkpoints"]
print("whole day: %d batches, %d checkpoints, largest %.2f MB, longest %d ms, mean %.0f ms"
      % (r["batches"], c["count"], c["max_bytes"] / 1e6, c["max_ms"], c["total_ms"] / max(c["count"], 1)))'
for stop_after in ${STOPS:-1.5 3.0}; do
  rm -rf "$d/ck2" "$d/out2"
  # The job itself in the background (not a pipeline), so that the SIGTERM reaches it.
  "$bin" run --until-end --json --log "$d/log" --topic clicks --output-dir "$d/out2" \
    --checkpoint-dir "$d/ck2" --checkpoint-interval 1h >/dev/null 2>&1 &
  pid=$!
  sleep "$stop_after"
  kill -TERM "$pid"
  wait "$pid" || true
  if ! checkpoint=$("$bin" state --checkpoint-dir "$d/ck2" --json | head -1); then
    echo "stopped after $stop_after s: no checkpoint (the run had ended?)"
    continue
  fi
  run --output-dir "$d/out2" --checkpoint-dir "$d/ck2" --checkpoint-interval 1h |
    CHECKPOINT="$checkpoint" STOP="$stop_after" python3 -c '
import json, os, sys
r = json.load(sys.stdin); c = json.loads(os.environ["CHECKPOINT"])["checkpoint"]
print("stopped after %s s: checkpoint of batch %d, %.2f MB; restart resumed from %s, restore %.3f s, first new batch after %.3f s"
      % (os.environ["STOP"], c["batch"], c["bytes"] / 1e6, r["resumed_from_batch"], r["restore_s"], r["first_new_batch_s"]))'
done
