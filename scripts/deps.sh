#!/usr/bin/env bash
# Install what a fresh Debian or Ubuntu machine lacks to build and test leaderrun:
# protoc and the well-known protos (etcd-client's build), a C compiler (the Rust linker driver),
# etcd and etcdctl (the tests' real etcd: Debian's 3.4), pip (scripts/fetch-etcd.sh fetches etcd 3.5
# with it into the checkout), openssl (the certificates of `scripts/bench.sh --tls`), and a Rust
# toolchain if there is none. Skips what is present; quiet unless it installs something.
set -euo pipefail

need=()
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
[ -e /usr/include/google/protobuf/timestamp.proto ] || need+=(libprotobuf-dev)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v curl >/dev/null 2>&1 || need+=(curl ca-certificates)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# pip without its recommends (build-essential, python3-dev): it only downloads a wheel here.
lean=()
python3 -m pip --version >/dev/null 2>&1 || lean+=(python3-pip)

if [ $((${#need[@]} + ${#lean[@]})) -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "deps: need root or sudo to install: ${need[*]} ${lean[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "deps: installing ${need[*]} ${lean[*]}" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  if [ ${#need[@]} -gt 0 ]; then
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  if [ ${#lean[@]} -gt 0 ]; then
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${lean[@]}" >/dev/null
  fi
fi

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] || {
    echo "deps: installing the Rust toolchain (rustup)" >&2
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy >/dev/null
  }
fi
