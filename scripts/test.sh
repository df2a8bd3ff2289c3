#!/usr/bin/env bash
# Runs every test of tenantscope, on a fresh machine too: installs what the tests need (Debian
# packages, Python clients in .venv), starts the servers they talk to on 127.0.0.1 (an
# S3-compatible server), runs the Rust and Python suites, and stops the servers.
#
#   ./scripts/test.sh                # everything
#   CARGO_TARGET_DIR=... ./scripts/test.sh   # reuse a build cache
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
START=$(date +%s)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
log() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - START ))"; }

log "Debian packages"
need=()
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

log "Python clients (.venv)"
if [ ! -x .venv/bin/python ]; then python3 -m venv .venv; fi
.venv/bin/pip install -q --disable-pip-version-check -r tests/python/requirements.txt

log "S3-compatible server (moto) on 127.0.0.1"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
S3_PORT=$(free_port)
.venv/bin/moto_server -H 127.0.0.1 -p "$S3_PORT" >"$WORK/moto.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$S3_PORT/" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS -X PUT "http://127.0.0.1:$S3_PORT/tenantscope-test" >/dev/null
export AWS_ENDPOINT_URL="http://127.0.0.1:$S3_PORT" AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
  TENANTSCOPE_TEST_S3_BUCKET=tenantscope-test TENANTSCOPE_REQUIRE_S3=1

log "Rust build"
cargo build --workspace --all-targets --locked

log "Rust tests"
cargo test --workspace --locked

log "Python tests"
TENANTSCOPE_BIN="$TARGET_DIR/debug/tenantscope" .venv/bin/python -m pytest -q tests/python

log "All tests passed"
