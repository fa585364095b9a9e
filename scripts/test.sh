#!/usr/bin/env bash
# The test command: installs what is missing, then checks formatting and lints and runs every
# test (unit tests, and integration tests against real etcd processes on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets -- --test-threads 2
