#!/usr/bin/env bash
# A Kafka-protocol broker for clickpulse development and tests: tansu (https://tansu.io), one
# binary, no JVM, no ZooKeeper.
#
#   scripts/kafka-broker.sh install          install tansu unless it is installed (~20 min)
#   scripts/kafka-broker.sh start [PORT]     run a broker on 127.0.0.1:PORT (default: a free
#                                            port) with in-memory storage, in the foreground
#   scripts/kafka-broker.sh free-port        print a free TCP port on 127.0.0.1
#   scripts/kafka-broker.sh path             print the tansu binary used
#
# Environment:
#   TANSU            the tansu binary (default: ~/.cargo/bin/tansu, then PATH)
#   TANSU_STORAGE    storage engine URL (default: memory://tansu/; memory loses every topic
#                    when the broker stops). This build's engines: see `tansu broker --help`
#                    ("Storage engines:"); postgres:// needs tansu built with --features postgres.
#
# The flags that work with tansu 0.6:
#   tansu broker --listener-url tcp://127.0.0.1:PORT \
#                --advertised-listener-url tcp://127.0.0.1:PORT \
#                --storage-engine memory://tansu/
# The advertised URL must be the address clients can reach: librdkafka connects to it after
# its first metadata request.
#
# The Kafka tests (cargo test -p clickpulse-connectors --test 'kafka*') start their own brokers
# on free ports; they skip (and say so) when tansu is missing, and fail instead when CI=true.
set -euo pipefail

TANSU_VERSION=0.6.0

tansu_bin() {
    if [[ -n "${TANSU:-}" ]]; then
        echo "$TANSU"
    elif [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/tansu" ]]; then
        echo "${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
    elif command -v tansu >/dev/null 2>&1; then
        command -v tansu
    else
        return 1
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

install() {
    if bin=$(tansu_bin); then
        echo "tansu already installed: $bin ($("$bin" --version 2>/dev/null || echo '?'))"
        return 0
    fi
    echo "Installing tansu $TANSU_VERSION with cargo; this takes about 20 minutes on 2 cores."
    cargo install --locked tansu --version "$TANSU_VERSION" --features dynostore
    echo "installed: $(tansu_bin)"
}

start() {
    local port="${1:-}"
    local bin
    if ! bin=$(tansu_bin); then
        echo "tansu is not installed: run $0 install (~20 min)" >&2
        exit 1
    fi
    if [[ -z "$port" ]]; then
        port=$(free_port)
    fi
    if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
        echo "not a port: $port" >&2
        exit 2
    fi
    local url="tcp://127.0.0.1:$port"
    local storage="${TANSU_STORAGE:-memory://tansu/}"
    echo "tansu on 127.0.0.1:$port ($storage); clickpulse URL: kafka://127.0.0.1:$port" >&2
    exec "$bin" broker \
        --listener-url "$url" \
        --advertised-listener-url "$url" \
        --storage-engine "$storage"
}

case "${1:-}" in
    install) install ;;
    start) start "${2:-}" ;;
    free-port) free_port ;;
    path) tansu_bin || { echo "tansu is not installed" >&2; exit 1; } ;;
    *)
        sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
        exit 2
        ;;
esac
