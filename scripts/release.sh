#!/usr/bin/env bash
# Builds the release artefacts into dist/:
#
#   dist/leaderrun                       a fully static x86_64 Linux binary (musl; see below)
#   dist/leaderrun_<version>-1_amd64.deb the Debian package (scripts/package.sh: glibc binary)
#   dist/SHA256SUMS                      `cd dist && sha256sum -c SHA256SUMS` checks both
#
#   bash scripts/release.sh           build dist/
#   bash scripts/release.sh --check   build dist/, then prove the static binary runs in an empty
#                                     root (below) and print its size and peak RSS beside
#                                     `etcdctl lock`'s
#
# Why musl: a static binary must resolve etcd's names the same way wherever it runs. musl reads
# /etc/hosts and /etc/resolv.conf itself, with nothing loaded at run time. glibc resolves through
# NSS: a recent glibc (2.36 on Debian 12) has its files and dns sources built in (a static glibc
# binary resolves from an empty root too: --check passes with LEADERRUN_RELEASE_LIBC=glibc), but
# any other source in a host's nsswitch.conf (resolve, myhostname, mdns, ldap) is a module loaded
# at run time, which a static binary can only load from the same glibc version, so such names do
# not resolve. glibc's build is also larger (4.4 MiB against 3.5) and its peak RSS higher
# (4.9 MiB against 4.1). musl's cost: a slower allocator (leaderrun allocates little) and
# no NSS at all (names come from /etc/hosts and DNS only).
# Where the musl target cannot be installed (rustup cannot download), or with
# LEADERRUN_RELEASE_LIBC=glibc, the binary is glibc linked with +crt-static instead, and the
# script says so.
#
# --check (root, or an unprivileged user namespace): a directory holding only the binary,
# etc/hosts, etc/resolv.conf and the TLS files becomes the root (unshare --pid --fork, then
# chroot; leaderrun is PID 1 there, as in a container). There the binary resolves etcd by name
# from etc/hosts (a name nothing else knows), speaks TLS to a real etcd (the one on PATH,
# on loopback) with mutual TLS and a given --cacert, leads, and its child - the same binary as
# `leaderrun leader`, from inside the root too - sees it leading. Then SIGTERM: the child is
# stopped, leadership handed over. The binary's size and peak RSS (VmHWM, leading with the
# status endpoint scraped) are printed beside `etcdctl lock`'s, holding a lock as long.
set -euo pipefail
cd "$(dirname "$0")/.."
MUSL=x86_64-unknown-linux-musl
GNU=x86_64-unknown-linux-gnu
DIST=dist

say() { printf 'release: %s\n' "$*" >&2; }
die() { printf 'release: error: %s\n' "$*" >&2; exit 1; }

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  *) die "unknown argument '$1' (usage: scripts/release.sh [--check])" ;;
esac
[[ $(uname -m) == x86_64 ]] || die "builds an x86_64 binary; this machine is $(uname -m)"

bash scripts/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null || die "no cargo (bash scripts/deps.sh installs a Rust toolchain)"

# apt_install PACKAGE...: as deps.sh does, quietly, root or sudo.
apt_install() {
  local sudo=""
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || die "need root or sudo to install: $*"
    sudo=sudo
  fi
  say "installing $*"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null ||
    { $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
}

# ---- the static binary -------------------------------------------------------------------------
libc=${LEADERRUN_RELEASE_LIBC:-musl}
case $libc in musl | glibc) ;; *) die "LEADERRUN_RELEASE_LIBC is musl or glibc, not '$libc'" ;; esac
if [[ $libc == musl ]] && ! rustup target list --installed 2>/dev/null | grep -qx "$MUSL"; then
  rustup target add "$MUSL" >/dev/null 2>&1 || {
    say "the $MUSL target cannot be installed (rustup target add failed): falling back to glibc +crt-static"
    libc=glibc
  }
fi
if [[ $libc == musl ]]; then
  # ring's C and assembly are compiled for musl with musl-gcc.
  command -v musl-gcc >/dev/null || apt_install musl-tools
  say "building the static binary (musl, $MUSL)"
  cargo build --release --locked --quiet --target "$MUSL" --bin leaderrun
  bin=target/$MUSL/release/leaderrun
else
  say "building the static binary (glibc +crt-static, $GNU): names resolve from /etc/hosts and DNS, not from NSS modules"
  # With --target, RUSTFLAGS reach only the target's crates (not build scripts), and the output
  # goes to target/$GNU/, apart from the dynamically linked target/release/leaderrun.
  RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --release --locked --quiet --target "$GNU" --bin leaderrun
  bin=target/$GNU/release/leaderrun
fi
desc=$(file -b "$bin")
[[ $desc == *"statically linked"* || $desc == *"static-pie linked"* ]] || die "$bin is not static: $desc"
ldd_out=$(ldd "$bin" 2>&1 || true)
[[ $ldd_out == *"statically linked"* || $ldd_out == *"not a dynamic executable"* ]] ||
  die "ldd lists libraries for $bin: $ldd_out"

# ---- dist/ -------------------------------------------------------------------------------------
say "building the Debian package (scripts/package.sh)"
deb=$(bash scripts/package.sh | tail -n 1)
[[ -f $deb ]] || die "scripts/package.sh gave no package (it said '$deb')"
rm -rf "$DIST"
mkdir -p "$DIST"
install -m 755 "$bin" "$DIST/leaderrun"
cp "$deb" "$DIST/"
(cd "$DIST" && sha256sum leaderrun "${deb##*/}" >SHA256SUMS)
size=$(stat -c %s "$DIST/leaderrun")
say "dist/leaderrun: $libc, $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.2f", s / 1048576 }') MiB), $desc"
(cd "$DIST" && sha256sum --quiet -c SHA256SUMS) || die "dist/SHA256SUMS does not match"

if ((!check)); then
  ls -l "$DIST" >&2
  exit 0
fi

# ---- --check: the empty root -------------------------------------------------------------------
etcd=$(command -v etcd) || die "no etcd on PATH (bash scripts/deps.sh installs Debian's etcd-server)"
etcdctl=$(command -v etcdctl) || die "no etcdctl on PATH"
command -v openssl >/dev/null || die "no openssl"
command -v curl >/dev/null || die "no curl"

work=$(mktemp -d "${TMPDIR:-/tmp}/leaderrun-release.XXXXXX")
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# free_ports N: N loopback ports free right now.
free_ports() {
  python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}
read -r port peer_port status_port < <(free_ports 3)

# Certificates: a CA, etcd's server certificate for the names used below, a client certificate.
# The endpoint's name, etcd.emptyroot.test, resolves only through the root's etc/hosts (.test is
# never in DNS, and the root's resolv.conf names a loopback server nobody runs).
name=etcd.emptyroot.test
tls=$work/tls
mkdir -p "$tls"
(
  cd "$tls"
  ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  openssl req -x509 "${ec[@]}" -keyout ca-key.pem -out ca.pem -days 2 -subj /CN=leaderrun-release-check-ca \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  for who in server client; do
    openssl req "${ec[@]}" -keyout "$who-key.pem" -out "$who.csr" -subj "/CN=$who" 2>/dev/null
  done
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 -out server.pem \
    -extfile <(printf 'subjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' "$name") 2>/dev/null
  openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 -out client.pem \
    -extfile <(printf 'extendedKeyUsage=clientAuth\n') 2>/dev/null
) || die "openssl could not make the certificates"

# etcd on loopback, mutual TLS: only a client certificate signed by the CA gets in.
"$etcd" --name release-check --data-dir "$work/etcd" \
  --listen-client-urls "https://127.0.0.1:$port" --advertise-client-urls "https://127.0.0.1:$port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "release-check=http://127.0.0.1:$peer_port" \
  --cert-file "$tls/server.pem" --key-file "$tls/server-key.pem" \
  --trusted-ca-file "$tls/ca.pem" --client-cert-auth >"$work/etcd.log" 2>&1 &
pids+=($!)
ctl=("$etcdctl" --endpoints "https://127.0.0.1:$port" --cacert "$tls/ca.pem" --cert "$tls/client.pem" --key "$tls/client-key.pem" --command-timeout 5s)
for ((i = 0; ; i++)); do
  "${ctl[@]}" endpoint health >/dev/null 2>&1 && break
  ((i < 100)) || die "etcd did not come up in 20 s: $(tail -n 5 "$work/etcd.log")"
  sleep 0.2
done

# The empty root: the binary, etc/hosts, etc/resolv.conf, the TLS files. Nothing else: no /proc,
# no /dev, no shell, no C library.
root=$work/root
mkdir -p "$root/etc" "$root/tls"
install -m 755 "$DIST/leaderrun" "$root/leaderrun"
printf '127.0.0.1 localhost %s\n' "$name" >"$root/etc/hosts"
printf 'nameserver 127.0.0.1\n' >"$root/etc/resolv.conf"
cp "$tls/ca.pem" "$tls/client.pem" "$tls/client-key.pem" "$root/tls/"
listing=$(cd "$root" && find . -mindepth 1 -not -type d | sort | tr '\n' ' ')
[[ $listing == "./etc/hosts ./etc/resolv.conf ./leaderrun ./tls/ca.pem ./tls/client-key.pem ./tls/client.pem " ]] ||
  die "the root holds more than it should: $listing"

# How to enter it: as root, unshare and chroot; else an unprivileged user namespace.
unshare_bin=$(command -v unshare)
if [[ $(id -u) == 0 ]]; then
  ns=("$unshare_bin" --pid --fork --kill-child)
  root_in=("$(command -v chroot)" "$root")
else
  ns=("$unshare_bin" --user --map-root-user --pid --fork --kill-child)
  root_in=(--root "$root")
fi
"${ns[@]}" true 2>"$work/unshare.err" ||
  die "cannot enter an empty root here (${ns[*]}): $(cat "$work/unshare.err")"
enter=("${ns[@]}" "${root_in[@]}")

# The settings as variables, so that the child inherits the endpoints and TLS files; its
# election is given as a flag (LEADERRUN_ELECTION is its parent's, not configuration, there).
# env -i: nothing of this host's environment (no PATH, no HOME).
say "entering the empty root: $listing"
env -i LEADERRUN_ENDPOINTS="https://$name:$port" LEADERRUN_CACERT=/tls/ca.pem \
  LEADERRUN_CERT=/tls/client.pem LEADERRUN_KEY_FILE=/tls/client-key.pem \
  "${enter[@]}" /leaderrun --election emptyroot --id emptyroot-leader --status-addr "127.0.0.1:$status_port" \
  -- /leaderrun leader --election emptyroot --endpoints "https://localhost:$port" --watch \
  >"$work/child.out" 2>"$work/leaderrun.log" &
upid=$!
pids+=("$upid")
# alive PID: running, not a zombie left for `wait`.
alive() {
  local state
  state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}
fail() {
  printf -- '--- leaderrun (in the root):\n%s\n--- its child:\n%s\n' "$(tail -n 20 "$work/leaderrun.log")" "$(cat "$work/child.out")" >&2
  die "$*"
}
# leaderrun's own pid, outside the namespace: unshare's child.
lpid=""
for ((i = 0; i < 50; i++)); do
  lpid=$(cat "/proc/$upid/task/$upid/children" 2>/dev/null | awk '{ print $1 }')
  [[ -n $lpid ]] && break
  sleep 0.1
done
[[ -n $lpid ]] || fail "no leaderrun started under unshare"
for ((i = 0; i < 150; i++)); do
  grep -q '^id=emptyroot-leader ' "$work/child.out" && break
  alive "$upid" || fail "leaderrun exited in the empty root"
  sleep 0.1
done
grep -q '^id=emptyroot-leader ' "$work/child.out" || fail "the child did not see its leaderrun leading within 15 s"
"${ctl[@]}" get --prefix emptyroot/ --print-value-only | grep -qx emptyroot-leader ||
  fail "etcd does not hold emptyroot-leader's key"

# Lead a while with the status endpoint scraped (/leader and /metrics, 10 times a second), then
# read the peak RSS.
lead_secs=${LEADERRUN_RELEASE_LEAD_SECS:-5}
scrapes=0
end=$((SECONDS + lead_secs))
while ((SECONDS < end)); do
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$status_port/leader") || true
  [[ $code == 200 ]] || fail "/leader answered '$code' while leading"
  curl -sf --max-time 2 "http://127.0.0.1:$status_port/metrics" >/dev/null || fail "/metrics did not answer"
  scrapes=$((scrapes + 1))
  sleep 0.1
done
hwm_leaderrun=$(awk '/^VmHWM:/ { print $2 }' "/proc/$lpid/status")

kill -TERM "$lpid"
rc=0
for ((i = 0; i < 150; i++)); do
  alive "$upid" || break
  sleep 0.1
done
alive "$upid" && fail "leaderrun did not exit within 15 s of SIGTERM"
wait "$upid" || rc=$?
((rc == 143 || rc == 0)) || fail "leaderrun exited $rc after SIGTERM (expected 143: its child stopped by SIGTERM)"
[[ -z $("${ctl[@]}" get --prefix emptyroot/ --keys-only) ]] || fail "leadership was not handed back: a key is left under emptyroot/"
say "empty root: resolved $name and localhost from etc/hosts, mutual TLS with --cacert, led (the child saw it), /leader 200 over $scrapes scrapes, SIGTERM handed over (exit $rc)"

# etcdctl lock, leading over the same mutual TLS for as long, for comparison.
"${ctl[@]}" lock emptyroot-lock -- sh -c "echo held >'$work/lock.held'; exec sleep 60" >"$work/lock.out" 2>&1 &
cpid=$!
pids+=("$cpid")
for ((i = 0; i < 150; i++)); do
  [[ -f $work/lock.held ]] && break
  sleep 0.1
done
[[ -f $work/lock.held ]] || die "etcdctl lock did not take the lock within 15 s: $(tail -n 5 "$work/lock.out")"
sleep "$lead_secs"
hwm_etcdctl=$(awk '/^VmHWM:/ { print $2 }' "/proc/$cpid/status")
# etcdctl does not pass a signal on to its command: end the command first.
pkill -TERM -P "$cpid" 2>/dev/null || true
kill -TERM "$cpid" 2>/dev/null || true
wait "$cpid" 2>/dev/null || true

etcdctl_size=$(stat -c %s "$(readlink -f "$etcdctl")")
printf 'release: %-34s %12s %16s\n' "leading over mutual TLS, ${lead_secs} s" "size (bytes)" "peak RSS (KiB)" >&2
printf 'release: %-34s %12s %16s\n' "leaderrun ($libc static)" "$size" "$hwm_leaderrun" >&2
printf 'release: %-34s %12s %16s\n' "etcdctl lock ($("$etcdctl" version | sed -n 's/^etcdctl version: //p'))" "$etcdctl_size" "$hwm_etcdctl" >&2
say "checked: dist/ built and the static binary leads from an empty root"
