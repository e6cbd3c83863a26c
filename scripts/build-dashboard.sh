#!/usr/bin/env bash
# Builds the live dashboard into dashboard/dist (served by `clickpulse` at /).
#
#   scripts/build-dashboard.sh           install npm deps if needed, build if a source is newer
#   scripts/build-dashboard.sh --force   build even when dist looks up to date
#
# Needs node >= 18 and npm. Deps come from dashboard/package-lock.json (`npm ci`).
set -euo pipefail

cd "$(dirname "$0")/../dashboard"

force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

command -v npm >/dev/null || { echo "build-dashboard: npm is not installed" >&2; exit 1; }

# Install when node_modules is missing or older than the lock file (npm writes
# node_modules/.package-lock.json on every install).
if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json || ! -f package-lock.json ]]; then
  if [[ -f package-lock.json ]]; then
    npm ci --no-audit --no-fund
  else
    npm install --no-audit --no-fund
  fi
fi

# Up to date when dist/index.html is newer than every source, config and lock file.
stamp=dist/index.html
if [[ $force -eq 0 && -f $stamp ]]; then
  newer=$(find src index.html build.mjs package.json package-lock.json -newer "$stamp" -print -quit 2>/dev/null)
  if [[ -z $newer ]]; then
    echo "build-dashboard: dashboard/dist is up to date"
    exit 0
  fi
fi

# build.mjs writes index.html (the stamp) last, so a failed build never looks up to date.
npm run --silent build
echo "build-dashboard: built dashboard/dist"
