#!/usr/bin/env bash
# Runs the dashboard's browser end-to-end test against the real binary, from a clean checkout:
# installs the test's npm deps, builds the dashboard (if a source changed) and the release
# binary (cargo is incremental), runs the dashboard's unit tests, then the browser test.
# Exits non-zero on any failure.
#
#   tests/e2e/run.sh
#
# Environment (see dashboard.test.mjs): CLICKPULSE_BIN (skips the cargo build),
# CLICKPULSE_E2E_SPEED, CLICKPULSE_E2E_ARGS, CLICKPULSE_E2E_SERVER=mock, CHROMIUM.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

chromium=${CHROMIUM:-/usr/bin/chromium}
if [[ ! -x $chromium ]]; then
  echo "e2e: $chromium is missing; install it with: apt-get install -y chromium" >&2
  exit 1
fi

cd "$here"
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
fi

"$root/scripts/build-dashboard.sh"
(cd "$root/dashboard" && npm test --silent)

if [[ -z ${CLICKPULSE_BIN:-} && ${CLICKPULSE_E2E_SERVER:-} != mock ]]; then
  (cd "$root" && cargo build --release --quiet -p clickpulse --bin clickpulse)
fi

node --test --test-reporter=spec dashboard.test.mjs
echo "e2e: screenshots in $here/screenshots/"
