#!/usr/bin/env bash
# Installs what the test suite needs beyond Rust and Node, reusing what is already installed:
# Debian's chromium (the dashboard's browser test) and the tansu Kafka-protocol broker (the Kafka
# integration tests; building it takes ~20 minutes the first time).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

if [[ ! -x /usr/bin/chromium ]]; then
  echo "install-test-deps: installing chromium (Debian package)"
  sudo_cmd=""
  [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q chromium
fi

"$root/scripts/kafka-broker.sh" install

# moto_server: the S3-compatible server of the checkpoint store's S3 tests (PyPI, seconds).
"$root/scripts/s3-server.sh" install
