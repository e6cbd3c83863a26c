#!/usr/bin/env bash
# An S3-compatible server for clickpulse development and tests: moto (PyPI's moto[server]),
# in memory, one Python process, no credentials checked.
#
#   scripts/s3-server.sh install        install moto[server] with pip unless moto_server works
#   scripts/s3-server.sh start [PORT]   run moto_server on 127.0.0.1:PORT (default: a free port)
#                                       in the foreground; every bucket is lost when it stops
#   scripts/s3-server.sh path           print the moto_server used, or say why there is none
#
# Environment:
#   MOTO_SERVER   the moto_server program (default: moto_server on PATH)
#
# A checkpoint store on it (create the bucket first: moto takes an unsigned PUT):
#   curl -X PUT http://127.0.0.1:PORT/ckpt
#   s3://ckpt/jobs/standard?endpoint=http://127.0.0.1:PORT&allow_http=true&region=us-east-1
#   with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY set (moto takes any value)
#
# The S3 tests (cargo test -p clickpulse-checkpoint --test s3_moto) start their own server on a
# free port; they skip (and say so) when moto is missing, and fail instead when CI=true.
set -euo pipefail

MOTO_REQUIREMENT='moto[server]>=5,<6'

# Prints the moto_server program if it runs. A pyenv shim exists for every Python version's
# scripts, so being on PATH is not enough: `--help` must work.
moto_bin() {
    local bin="${MOTO_SERVER:-moto_server}"
    if ! command -v "$bin" >/dev/null 2>&1; then
        echo "no moto_server (${MOTO_SERVER:+\$MOTO_SERVER=$MOTO_SERVER, }PATH): run $0 install" >&2
        return 1
    fi
    if ! "$bin" --help >/dev/null 2>&1; then
        echo "$(command -v "$bin") does not run (moto not installed for this Python?): run $0 install" >&2
        return 1
    fi
    command -v "$bin"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

install() {
    local bin
    if bin=$(moto_bin 2>/dev/null); then
        echo "moto already installed: $bin"
        return 0
    fi
    echo "Installing $MOTO_REQUIREMENT with pip."
    python3 -m pip install --quiet "$MOTO_REQUIREMENT"
    # pyenv makes shims for new scripts only on a rehash.
    if command -v pyenv >/dev/null 2>&1; then
        pyenv rehash
    fi
    echo "installed: $(moto_bin)"
}

start() {
    local port="${1:-}"
    local bin
    bin=$(moto_bin) || exit 1
    if [[ -z "$port" ]]; then
        port=$(free_port)
    fi
    if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
        echo "not a port: $port" >&2
        exit 2
    fi
    echo "moto on 127.0.0.1:$port; endpoint: http://127.0.0.1:$port" >&2
    exec "$bin" -H 127.0.0.1 -p "$port"
}

case "${1:-}" in
    install) install ;;
    start) start "${2:-}" ;;
    path) moto_bin ;;
    *)
        sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
