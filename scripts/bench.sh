#!/usr/bin/env bash
# Measure (never assert) leaderrun against `etcdctl lock` on one throwaway loopback etcd:
#
#   child-exit handover  two candidates; the leader's child exits on its own after ~300 ms;
#                        gap from the old child's end to the new child's start
#                        (leaderrun --on-exit exit, and `etcdctl lock NAME -- CHILD`)
#   SIGTERM handover     SIGTERM to the leading leaderrun; same gap. For `etcdctl lock`, shows
#                        what SIGTERM does to it and its child.
#   supervisor SIGKILLed kill -9 to the leading leaderrun (its guardian kills the child's group,
#                        then revokes the lease); time from the kill to the standby's child start,
#                        p50 / p99. For `etcdctl lock`, the standby waits out the TTL, and the
#                        killed one's child runs on (counted)
#   peak RSS             VmHWM of a leading leaderrun and a leading `etcdctl lock` after ~5 s of
#                        leading (keepalives flowing)
#   status endpoint      VmHWM of a leading leaderrun with --status-addr, its /metrics scraped
#                        every second and its /leader asked 100 times a second (a new connection
#                        each, as a load balancer's check) for the same ~5 s; /leader's latency
#                        (connect to the server's close) p50 / p99
#
# Usage: bash scripts/bench.sh [--tls] [--runs N]     (default 7; medians of N runs)
#
#   --tls   also measure everything over mutual TLS, interleaved with the plain runs, and print
#           both tables: a second throwaway etcd serves https on 127.0.0.1 with
#           --client-cert-auth, with a CA, server and client certificate made in the temp dir
#           (openssl, ECDSA P-256); leaderrun and `etcdctl lock` both use --cacert/--cert/--key.
#
# The children are a tiny C program (compiled with cc into the temp dir) that records
# CLOCK_MONOTONIC timestamps, so the gaps compare clocks of one kind across processes.
# Everything started here is stopped on exit, Ctrl-C included. Only 127.0.0.1 is used.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
RUNS=7
TLS=""           # --tls: also over mutual TLS
TTL=5            # leaderrun --ttl and etcdctl lock --ttl: the same session TTL for both
CHILD_MS=300     # how long the leader's child lives in the child-exit figure
RSS_LEAD_S=5     # how long each leads before its VmHWM is read
# A standby must have been queued this long before a handover is timed. etcd (3.4) delivers the
# first events to a watch that starts at a past revision (as every queued campaign's and
# `etcdctl lock`'s wait-for-my-predecessor watch does) from a loop that runs every 100 ms; a
# handover in the first ~100 ms after the standby queued is seen up to 100 ms late, whatever the
# tool. The SIGTERM runs wait this long; child-exit runs where the child happened to end sooner
# after the standby queued are discarded and retried.
SETTLE_MS=300
MIN_QUEUED_MS=150

usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }
while (($#)); do
  case $1 in
    --runs) [[ ${2:-} =~ ^[1-9][0-9]?$ ]] || { echo "bench: --runs takes 1..99" >&2; exit 2; }; RUNS=$2; shift 2 ;;
    --runs=*) RUNS=${1#--runs=}; [[ $RUNS =~ ^[1-9][0-9]?$ ]] || { echo "bench: --runs takes 1..99" >&2; exit 2; }; shift ;;
    --tls) TLS=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'bench: %s\n' "$*"; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

# ---- dependencies and build -------------------------------------------------------------------
bash "$root/scripts/deps.sh"
export PATH="$HOME/.cargo/bin:$PATH"
command -v cc >/dev/null 2>&1 || die "needs a C compiler (cc) for the timestamping child"
[[ -z $TLS ]] || command -v openssl >/dev/null 2>&1 || die "--tls needs the openssl command"
say "building leaderrun (cargo build --release)"
bin=$(cd "$root" && cargo build --release --message-format=json-render-diagnostics |
  sed -n 's/.*"executable":"\([^"]*\/leaderrun\)".*/\1/p' | tail -n 1)
[[ -n $bin && -x $bin ]] || die "cargo build did not produce the leaderrun binary"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/leaderrun-bench.XXXXXX")
etcd_pid=""
etcd_plain_pid=""   # with --tls, the plain etcd while etcd_pid is the TLS one
started=()   # every leaderrun / etcdctl pid started here

# sleep that a trapped SIGTERM interrupts at once (a foreground sleep would delay the trap).
pause_pid=""
pause() { sleep "$1" & pause_pid=$!; wait "$pause_pid" || true; pause_pid=""; }
alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }
# Gone for good: no such process, or a zombie not reaped yet.
gone() { local st; st=$(ps -o stat= -p "$1" 2>/dev/null || true); [[ -z $st || $st == Z* ]]; }
wait_gone() {   # PID HUNDREDTHS
  local i
  for ((i = 0; i < $2; i++)); do gone "$1" && return 0; sleep 0.01; done
  gone "$1"
}
# Stop one of our processes: SIGTERM, up to 3 s, then SIGKILL; reap it.
stop_pid() {
  local pid=$1
  alive "$pid" || { { wait "$pid"; } 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  wait_gone "$pid" 300 || kill -KILL "$pid" 2>/dev/null || true
  { wait "$pid"; } 2>/dev/null || true
}
# Everything started after etcd (candidates and their children) carries BENCH_DIR=$tmp in its
# environment: send SIG to the ones still alive. Never by name.
kill_marked() {
  local sig=$1 p
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [[ $p == "$$" || $p == "$BASHPID" ]] && continue
    grep -qzxF "BENCH_DIR=$tmp" "/proc/$p/environ" 2>/dev/null && kill "-$sig" "$p" 2>/dev/null
  done
  return 0
}

cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  set +e
  exec 2>/dev/null   # no job notices ("Killed ...") while tearing down
  [[ -n $pause_pid ]] && kill "$pause_pid"
  # SIGTERM to the candidates and to the children: etcdctl lock lets go only when its child ends.
  kill_marked TERM
  for pid in "${started[@]}"; do
    wait_gone "$pid" 300 || kill -KILL "$pid" 2>/dev/null
    { wait "$pid"; } 2>/dev/null
  done
  for pid in "$etcd_pid" "$etcd_plain_pid"; do
    alive "$pid" || continue
    kill -TERM "$pid"; wait_gone "$pid" 500 || kill -KILL "$pid"
    { wait "$pid"; } 2>/dev/null
  done
  kill_marked KILL
  if [[ -n ${BENCH_KEEP:-} ]]; then say "kept $tmp"; else rm -rf "$tmp"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'echo; say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

# ---- the timestamping child -------------------------------------------------------------------
cat >"$tmp/stamp.c" <<'EOF'
/* stamp FILE MS   append "start <mono ns> <pid>" to FILE, live MS ms (0: until SIGTERM/SIGINT,
 *                 at most 120 s), append "end <mono ns> <pid> exit|term|cap", exit 0.
 * stamp now       print CLOCK_MONOTONIC in ns.
 * Each line is one write(2) on an O_APPEND fd; the signal handler only uses async-signal-safe
 * calls (clock_gettime, write, _exit). */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int fd = -1;

static long long mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static char *put_num(char *p, long long v) {
  char buf[24];
  int n = 0;
  do { buf[n++] = (char)('0' + v % 10); v /= 10; } while (v > 0);
  while (n > 0) *p++ = buf[--n];
  return p;
}

static void record(const char *what, const char *how) {
  char line[128], *p = line;
  long long now = mono_ns();
  size_t l = strlen(what);
  memcpy(p, what, l); p += l; *p++ = ' ';
  p = put_num(p, now); *p++ = ' ';
  p = put_num(p, (long long)getpid());
  if (how) { *p++ = ' '; l = strlen(how); memcpy(p, how, l); p += l; }
  *p++ = '\n';
  if (write(fd, line, (size_t)(p - line)) < 0) _exit(3);
}

static void on_term(int sig) {
  (void)sig;
  record("end", "term");
  _exit(0);
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "now") == 0) {
    printf("%lld\n", mono_ns());
    return 0;
  }
  if (argc != 3) {
    fprintf(stderr, "usage: stamp FILE MS | stamp now\n");
    return 2;
  }
  long ms = atol(argv[2]);
  fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT, 0644);
  if (fd < 0) { perror(argv[1]); return 1; }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_term;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  record("start", NULL);
  long long end = mono_ns() + (ms > 0 ? ms : 120000) * 1000000LL;
  for (;;) {
    long long left = end - mono_ns();
    if (left <= 0) break;
    struct timespec ts = { (time_t)(left / 1000000000LL), (long)(left % 1000000000LL) };
    nanosleep(&ts, NULL);
  }
  record("end", ms > 0 ? "exit" : "cap");
  return 0;
}
EOF
cc -O2 -Wall -o "$tmp/stamp" "$tmp/stamp.c" || die "cannot compile the timestamping child"
STAMP=$tmp/stamp
mono_now() { "$STAMP" now; }

# ---- the HTTP client for the status endpoint --------------------------------------------------
cat >"$tmp/hget.c" <<'EOF'
/* hget PORT PATH RATE SECONDS   GET http://127.0.0.1:PORT/PATH RATE times a second for SECONDS,
 *                               a new connection each, on a fixed schedule (a late request goes
 *                               out at once, the schedule is kept); prints "<latency us> <code>"
 *                               per request (connect to the server's close), code 0: no answer. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static long long mono_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int get(int port, const char *path) {
  int s = socket(AF_INET, SOCK_STREAM, 0), code = 0, one = 1;
  if (s < 0) return 0;
  struct timeval tv = { 2, 0 };
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((unsigned short)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  char req[256], buf[65536];
  int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
  if (connect(s, (struct sockaddr *)&a, sizeof a) == 0 && write(s, req, (size_t)n) == n) {
    ssize_t got, total = 0;
    while ((got = read(s, buf + total, sizeof buf - 1 - (size_t)total)) > 0) {
      total += got;
      if ((size_t)total >= sizeof buf - 1) total = 16; /* keep the status line, drop the rest */
    }
    buf[total] = 0;
    if (total > 12 && strncmp(buf, "HTTP/1.", 7) == 0) code = atoi(buf + 9);
  }
  close(s);
  return code;
}

int main(int argc, char **argv) {
  if (argc != 5) { fprintf(stderr, "usage: hget PORT PATH RATE SECONDS\n"); return 2; }
  int port = atoi(argv[1]), rate = atoi(argv[3]), secs = atoi(argv[4]);
  long long period = 1000000000LL / (rate > 0 ? rate : 1), start = mono_ns();
  for (long long i = 0; i < (long long)rate * secs; i++) {
    long long at = start + i * period, left = at - mono_ns();
    if (left > 0) {
      struct timespec ts = { (time_t)(left / 1000000000LL), (long)(left % 1000000000LL) };
      nanosleep(&ts, NULL);
    }
    long long t0 = mono_ns();
    int code = get(port, argv[2]);
    printf("%lld %d\n", (mono_ns() - t0) / 1000, code);
    fflush(stdout);
  }
  return 0;
}
EOF
cc -O2 -Wall -o "$tmp/hget" "$tmp/hget.c" || die "cannot compile the HTTP client"
HGET=$tmp/hget

# ---- certificates (--tls) ---------------------------------------------------------------------
# make_certs DIR: a CA, etcd's server certificate (IP:127.0.0.1, DNS:localhost; server and client
# auth, as etcd 3.4's gateway dials its own https port with it) and a client certificate, ECDSA
# P-256, valid one day: DIR/ca.crt, server.crt/.key, client.crt/.key. Its own config file, so
# the system's openssl.cnf adds nothing.
make_certs() {
  local d=$1 f
  mkdir -p "$d"
  cat >"$d/openssl.cnf" <<'EOF'
[req]
distinguished_name = req_dn
[req_dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth, clientAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  (
    openssl req -x509 -config "$d/openssl.cnf" -extensions ca "${ec[@]}" -days 1 \
      -subj "/CN=leaderrun bench CA" -keyout "$d/ca.key" -out "$d/ca.crt" &&
    for f in server client; do
      openssl req -new -config "$d/openssl.cnf" "${ec[@]}" -subj "/CN=leaderrun bench $f" \
        -keyout "$d/$f.key" -out "$d/$f.csr" &&
      openssl x509 -req -in "$d/$f.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" \
        -set_serial "0x$(openssl rand -hex 8)" -days 1 \
        -extfile "$d/openssl.cnf" -extensions "$f" -out "$d/$f.crt" || exit 1
    done &&
    openssl verify -CAfile "$d/ca.crt" "$d/server.crt" "$d/client.crt"
  ) >"$d/openssl.log" 2>&1 || { cat "$d/openssl.log" >&2; die "could not make the TLS certificates"; }
  chmod 600 "$d"/*.key
}

# ---- a throwaway etcd (and with --tls, a second one with mutual TLS) ---------------------------
source "$root/scripts/local-etcd.sh"
start_etcd bench
EP=$ETCD_ENDPOINT
CONN_plain=(--endpoints "$EP")
MODES=(plain)
if [[ -n $TLS ]]; then
  make_certs "$tmp/pki"
  etcd_plain_pid=$etcd_pid
  start_etcd bench-tls --tls "$tmp/pki"
  EP_TLS=$ETCD_ENDPOINT
  CONN_tls=(--endpoints "$EP_TLS" --cacert "$tmp/pki/ca.crt" --cert "$tmp/pki/client.crt" --key "$tmp/pki/client.key")
  MODES+=(tls)
fi
export ETCDCTL_API=3
export BENCH_DIR=$tmp
# use_mode plain|tls: what lr, lk and ctl connect with ($CONN: endpoint and TLS options, the same
# for leaderrun and etcdctl) and where their files go ($mode).
use_mode() {
  mode=$1
  if [[ $1 == tls ]]; then CONN=("${CONN_tls[@]}"); else CONN=("${CONN_plain[@]}"); fi
}
use_mode plain
# tag MODE: how a line names its mode; nothing when only plain runs.
tag() { [[ -z $TLS ]] || { if [[ $1 == tls ]]; then printf '[TLS] '; else printf '[plain] '; fi; }; }
ctl() { timeout 10 etcdctl "${CONN[@]}" --command-timeout=3s "$@"; }
say "etcd $(etcd --version | sed -n 's/^etcd Version: //p') on $EP; $(nproc) CPUs; $RUNS runs per figure"
[[ -z $TLS ]] || say "and over TLS (mutual): etcd with --client-cert-auth on $EP_TLS; CA, server and client certificates ECDSA P-256, made with $(openssl version | cut -d' ' -f1-2); leaderrun and etcdctl both with --cacert/--cert/--key"

# ---- candidates ------------------------------------------------------------------------------
# lr NAME ID FILE MS: a leaderrun candidate whose child is `stamp FILE MS`; sets $last_pid.
lr() {
  "$bin" "${CONN[@]}" --election "$1" --id "$2" --ttl "$TTL" --on-exit exit \
    -- "$STAMP" "$3" "$4" >>"$tmp/$mode.$1.$2.log" 2>&1 &
  last_pid=$!
  started+=("$last_pid")
}
# lr_http NAME ID FILE MS: lr with --status-addr on a free loopback port, found by trying (a
# port another process holds makes leaderrun exit 2 at once); sets $last_pid and $last_port.
lr_http() {
  local try
  for try in 1 2 3 4 5 6 7 8; do
    last_port=$((20000 + RANDOM % 30000))
    "$bin" "${CONN[@]}" --election "$1" --id "$2" --ttl "$TTL" --on-exit exit \
      --status-addr "127.0.0.1:$last_port" -- "$STAMP" "$3" "$4" >>"$tmp/$mode.$1.$2.log" 2>&1 &
    last_pid=$!
    started+=("$last_pid")
    pause 0.3
    alive "$last_pid" && return 0
  done
  die "leaderrun --status-addr found no free port"
}
# lk NAME ID FILE MS: the same as an `etcdctl lock` candidate.
lk() {
  etcdctl "${CONN[@]}" lock --ttl "$TTL" "$1" -- "$STAMP" "$3" "$4" >>"$tmp/$mode.$1.$2.log" 2>&1 &
  last_pid=$!
  started+=("$last_pid")
}
# field FILE WORD N: field N of the first line of FILE starting with WORD (empty if none).
field() { awk -v w="$2" -v n="$3" '$1 == w { print $n; exit }' "$1" 2>/dev/null; }
# wait_line FILE WORD HUNDREDTHS: wait for a line starting with WORD.
wait_line() {
  local i
  for ((i = 0; i < $3; i++)); do [[ -n $(field "$1" "$2" 2) ]] && return 0; sleep 0.01; done
  [[ -n $(field "$1" "$2" 2) ]]
}
# wait_keys NAME COUNT TENTHS: wait until NAME/ holds COUNT keys (both candidates queued).
wait_keys() {
  local i
  for ((i = 0; i < $3; i++)); do
    (($(ctl get --prefix "$1/" --keys-only 2>/dev/null | grep -c . || true) >= $2)) && return 0
    sleep 0.02
  done
  return 1
}
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f\n", (b - a) / 1e6 }'; }


# One handover in the current mode. KIND: exit-lr | exit-lock | term-lr. Appends the gap (ms) to
# $tmp/MODE.KIND.ms, or returns 1 (run discarded, reason in $why). Runs in this shell, so cleanup
# knows its pids.
handover() {
  local kind=$1 run=$2 name="$1-$2" ms_a queued t_kill r="$tmp/$mode"
  a="$tmp/$mode.$1-$2.a" b="$tmp/$mode.$1-$2.b" pa="" pb=""
  local start=lr child_a
  [[ $kind == exit-lock || $kind == kill-lock ]] && start=lk
  if [[ $kind == term-lr || $kind == kill-* ]]; then ms_a=0; else ms_a=$CHILD_MS; fi
  $start "$name" A "$a" "$ms_a"; pa=$last_pid
  wait_line "$a" start 1000 || { why="leader's child did not start in 10 s"; teardown; return 1; }
  # Only now the standby: no race for the first turn.
  $start "$name" B "$b" 0; pb=$last_pid
  wait_keys "$name" 2 250 || { why="standby not queued in 5 s"; teardown; return 1; }
  queued=$(mono_now)
  if [[ $kind == term-lr || $kind == kill-* ]]; then
    pause "$(awk -v m="$SETTLE_MS" 'BEGIN { printf "%.3f", m / 1000 }')"
    t_kill=$(mono_now)
    if [[ $kind == term-lr ]]; then kill -TERM "$pa"; else kill -KILL "$pa"; fi
  fi
  if [[ $kind == kill-* ]]; then
    # A SIGKILLed child leaves no end line: time the kill to the standby's child start, and
    # look whether the old child is still there when it does.
    child_a=$(field "$a" start 3)
    wait_line "$b" start $((TTL * 100 + 1000)) || { why="no takeover in TTL + 10 s"; teardown; return 1; }
    ms "$t_kill" "$(field "$b" start 2)" >>"$r.$kind.ms"
    if gone "$child_a"; then echo gone; else echo running; fi >>"$r.$kind.old"
    { wait "$pa"; } 2>/dev/null || true
    teardown
    return 0
  fi
  wait_line "$a" end 1000 || { why="old child did not end in 10 s"; teardown; return 1; }
  if [[ $kind != term-lr ]] && ((queued + MIN_QUEUED_MS * 1000000 > $(field "$a" end 2))); then
    why="standby queued only $(ms "$queued" "$(field "$a" end 2)") ms before the child ended (want >= $MIN_QUEUED_MS)"
    wait_line "$b" start 1000 || true
    teardown; return 1
  fi
  wait_line "$b" start 1000 || { why="no handover in 10 s"; teardown; return 1; }
  ms "$(field "$a" end 2)" "$(field "$b" start 2)" >>"$r.$kind.ms"
  if [[ $kind == term-lr ]]; then
    ms "$t_kill" "$(field "$a" end 2)" >>"$r.term-lr.stop.ms"
    wait_gone "$pa" 300 || true
    local st=0; { wait "$pa"; } 2>/dev/null || st=$?
    echo "$st" >>"$r.term-lr.status"
  fi
  teardown
  return 0
}
# Stop a handover's processes ($pa, $pb, children recorded in $a, $b): the children first, as
# etcdctl lock only lets go when its child ends, then the supervisors.
teardown() {
  local f c
  for f in "$b" "$a"; do
    c=$(field "$f" start 3)
    [[ -n $c && -z $(field "$f" end 2) ]] && kill -TERM "$c" 2>/dev/null
  done
  [[ -n ${pb:-} ]] && stop_pid "$pb"
  [[ -n ${pa:-} ]] && stop_pid "$pa"
  return 0
}

# stats FILE: "median min max" of the numbers in FILE.
stats() {
  sort -g "$1" | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "- - -"; exit }
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.2f %.2f %.2f\n", m, v[1], v[NR] }'
}

# pct FILE P: the P-th percentile (nearest rank) of the numbers in FILE.
pct() {
  sort -g "$1" | awk -v p="$2" '{ v[NR] = $1 } END {
    if (NR == 0) { print "-"; exit }
    r = int((p * NR + 99) / 100); if (r < 1) r = 1
    printf "%.2f\n", v[r] }'
}

# ---- 1 and 2: handovers, interleaved so drift hits all three (with --tls: all six) alike ----------
say "child-exit handover (child lives ${CHILD_MS} ms), SIGTERM handover and SIGKILLed supervisor, $RUNS runs each"
KINDS=(exit-lr exit-lock term-lr kill-lr kill-lock)
declare -A done_runs=() discarded=()
for m in "${MODES[@]}"; do
  for kind in "${KINDS[@]}"; do : >"$tmp/$m.$kind.ms"; done_runs[$m/$kind]=0; done
  : >"$tmp/$m.term-lr.stop.ms"; : >"$tmp/$m.term-lr.status"; : >"$tmp/$m.kill-lr.old"; : >"$tmp/$m.kill-lock.old"
  discarded[$m]=0
done
unfinished() {
  local k
  for k in "${!done_runs[@]}"; do ((done_runs[$k] < RUNS)) && return 0; done
  return 1
}
attempt=0
max_attempts=$((RUNS * 2 + 2))   # per kind: discarded runs are retried, within a bound
while unfinished; do
  attempt=$((attempt + 1))
  ((attempt <= max_attempts)) || { say "giving up after $max_attempts rounds"; break; }
  for m in "${MODES[@]}"; do
    use_mode "$m"
    for kind in "${KINDS[@]}"; do
      ((done_runs[$mode/$kind] < RUNS)) || continue
      why=""
      if handover "$kind" "$attempt"; then
        done_runs[$mode/$kind]=$((done_runs[$mode/$kind] + 1))
      else
        discarded[$mode]=$((discarded[$mode] + 1))
        say "  $(tag "$mode")$kind run $attempt discarded: $why"
      fi
    done
    printf 'bench:   %sround %d: leaderrun exit %s ms | etcdctl lock exit %s ms | leaderrun SIGTERM %s ms | SIGKILL: leaderrun %s ms, etcdctl lock %s ms\n' "$(tag "$mode")" "$attempt" \
      "$(tail -n 1 "$tmp/$mode.exit-lr.ms" 2>/dev/null)" "$(tail -n 1 "$tmp/$mode.exit-lock.ms" 2>/dev/null)" "$(tail -n 1 "$tmp/$mode.term-lr.ms" 2>/dev/null)" \
      "$(tail -n 1 "$tmp/$mode.kill-lr.ms" 2>/dev/null)" "$(tail -n 1 "$tmp/$mode.kill-lock.ms" 2>/dev/null)"
  done
done

# ---- 2b: what SIGTERM does to etcdctl lock ---------------------------------------------------
declare -A term_lock_summary=()
for m in "${MODES[@]}"; do
  use_mode "$m"
  say "$(tag "$mode")SIGTERM to a leading \`etcdctl lock\` (with a queued standby), then 2 s of watching:"
  a="$tmp/$mode.term-lock.a"; b="$tmp/$mode.term-lock.b"
  lk term-lock A "$a" 0; pa=$last_pid
  wait_line "$a" start 1000 || die "etcdctl lock's child did not start"
  lk term-lock B "$b" 0; pb=$last_pid
  wait_keys term-lock 2 250 || die "etcdctl lock standby not queued"
  child_a=$(field "$a" start 3)
  kill -TERM "$pa"
  pause 2
  if alive "$pa"; then lock_proc="still running"; else lock_proc="exited"; fi
  if [[ -n $(field "$a" end 2) ]]; then lock_child="ended ($(field "$a" end 4))"
  elif gone "$child_a"; then lock_child="gone without a trace"
  else lock_child="STILL RUNNING"; fi
  if [[ -n $(field "$b" start 2) ]]; then lock_standby="took over"; else lock_standby="did not take over"; fi
  lock_keys=$(ctl get --prefix term-lock/ --keys-only 2>/dev/null | grep -c . || true)
  say "  etcdctl lock: $lock_proc; its child (pid $child_a): $lock_child; standby: $lock_standby; keys under term-lock/: $lock_keys"
  term_lock_summary[$mode]="n/a (child keeps running)"
  [[ $lock_child == "STILL RUNNING" ]] || term_lock_summary[$mode]="n/a (child $lock_child)"
  kill -TERM "$child_a" 2>/dev/null || true
  wait_gone "$pa" 300 || true
  if wait_line "$b" start 300; then
    say "  after the child itself was stopped, the standby took over $(ms "$(field "$a" end 2)" "$(field "$b" start 2)") ms later"
  fi
  kill -TERM "$(field "$b" start 3)" 2>/dev/null || true
  stop_pid "$pb"; stop_pid "$pa"
done

# ---- 3: peak RSS -----------------------------------------------------------------------------
say "peak RSS: a leading leaderrun and a leading etcdctl lock, both --ttl $TTL, after ${RSS_LEAD_S} s of leading"
[[ -z $TLS ]] || say "  (plain and over TLS at the same time, each on its own etcd)"
say "  and a leading leaderrun --status-addr: /metrics scraped every second, /leader asked 100 times a second"
declare -A p_lr=() p_lk=() p_http=() port_http=() hwm_lr=() hwm_lk=() hwm_http=()
loaders=()
for m in "${MODES[@]}"; do
  use_mode "$m"
  lr rss-lr A "$tmp/$mode.rss-lr.a" 0; p_lr[$mode]=$last_pid
  lk rss-lock A "$tmp/$mode.rss-lock.a" 0; p_lk[$mode]=$last_pid
  lr_http rss-http A "$tmp/$mode.rss-http.a" 0; p_http[$mode]=$last_pid; port_http[$mode]=$last_port
done
for m in "${MODES[@]}"; do
  wait_line "$tmp/$m.rss-lr.a" start 1000 || die "$(tag "$m")leaderrun did not lead"
  wait_line "$tmp/$m.rss-lock.a" start 1000 || die "$(tag "$m")etcdctl lock did not lock"
  wait_line "$tmp/$m.rss-http.a" start 1000 || die "$(tag "$m")leaderrun --status-addr did not lead"
  "$HGET" "${port_http[$m]}" /metrics 1 "$RSS_LEAD_S" >"$tmp/$m.metrics.lat" & loaders+=($!)
  "$HGET" "${port_http[$m]}" /leader 100 "$RSS_LEAD_S" >"$tmp/$m.leader.lat" & loaders+=($!)
done
pause "$RSS_LEAD_S"
for pid in "${loaders[@]}"; do wait "$pid" || true; done
kb() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status" 2>/dev/null; }
mib() { awk -v k="${1:-0}" 'BEGIN { printf "%.1f", k / 1024 }'; }
# codes FILE: how many answers of each status code hget saw (0: none).
codes() { awk '{ c[$2]++ } END { for (k in c) printf "%s%s x%d", (n++ ? ", " : ""), k, c[k] }' "$1"; }
# pct FILE P: the P-th percentile (nearest rank) of hget's latencies in FILE, in ms.
pct() { awk '{ print $1 }' "$1" | sort -g | awk -v p="$2" '{ v[NR] = $1 } END {
  if (NR == 0) { print "-"; exit }
  r = int((p / 100) * NR + 0.999999); if (r < 1) r = 1; if (r > NR) r = NR
  printf "%.2f\n", v[r] / 1000 }'; }
for m in "${MODES[@]}"; do
  hwm_lr[$m]=$(kb "${p_lr[$m]}" VmHWM); rss_lr=$(kb "${p_lr[$m]}" VmRSS); thr_lr=$(kb "${p_lr[$m]}" Threads)
  hwm_lk[$m]=$(kb "${p_lk[$m]}" VmHWM); rss_lk=$(kb "${p_lk[$m]}" VmRSS); thr_lk=$(kb "${p_lk[$m]}" Threads)
  say "  $(tag "$m")leaderrun:    VmHWM $(mib "${hwm_lr[$m]}") MiB, VmRSS $(mib "$rss_lr") MiB, $thr_lr threads"
  say "  $(tag "$m")etcdctl lock: VmHWM $(mib "${hwm_lk[$m]}") MiB, VmRSS $(mib "$rss_lk") MiB, $thr_lk threads"
  hwm_http[$m]=$(kb "${p_http[$m]}" VmHWM); rss_http=$(kb "${p_http[$m]}" VmRSS)
  say "  $(tag "$m")leaderrun --status-addr, scraped: VmHWM $(mib "${hwm_http[$m]}") MiB, VmRSS $(mib "$rss_http") MiB; status codes of /leader: $(codes "$tmp/$m.leader.lat"), of /metrics: $(codes "$tmp/$m.metrics.lat")"
done
for m in "${MODES[@]}"; do
  kill -TERM "$(field "$tmp/$m.rss-lock.a" start 3)" 2>/dev/null || true
  stop_pid "${p_lr[$m]}"; stop_pid "${p_lk[$m]}"; stop_pid "${p_http[$m]}"
done

# ---- summary ---------------------------------------------------------------------------------
one() { awk -v v="$1" 'BEGIN { if (v == "-") print "-"; else printf "%.1f ms", v }'; }
declare -A table=()
echo
for m in "${MODES[@]}"; do
  r="$tmp/$m"
  read -r e_lr_med e_lr_min e_lr_max < <(stats "$r.exit-lr.ms")
  read -r e_lk_med e_lk_min e_lk_max < <(stats "$r.exit-lock.ms")
  read -r t_lr_med t_lr_min t_lr_max < <(stats "$r.term-lr.ms")
  read -r s_med s_min s_max < <(stats "$r.term-lr.stop.ms")
  ratio=$(awk -v a="$e_lr_med" -v b="$e_lk_med" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else print "-" }')
  statuses=$(sort -u "$r.term-lr.status" | paste -sd, -)
  k_lr_50=$(pct "$r.kill-lr.ms" 50); k_lr_99=$(pct "$r.kill-lr.ms" 99)
  k_lk_50=$(pct "$r.kill-lock.ms" 50); k_lk_99=$(pct "$r.kill-lock.ms" 99)
  k_lr_old=$(grep -c running "$r.kill-lr.old" || true); k_lk_old=$(grep -c running "$r.kill-lock.old" || true)
  say "$(tag "$m")runs kept: leaderrun exit ${done_runs[$m/exit-lr]}, etcdctl lock exit ${done_runs[$m/exit-lock]}, leaderrun SIGTERM ${done_runs[$m/term-lr]}, leaderrun SIGKILL ${done_runs[$m/kill-lr]}, etcdctl lock SIGKILL ${done_runs[$m/kill-lock]}; discarded ${discarded[$m]}"
  say "$(tag "$m")child-exit handover, ms (median / min / max): leaderrun $e_lr_med / $e_lr_min / $e_lr_max; etcdctl lock $e_lk_med / $e_lk_min / $e_lk_max"
  say "$(tag "$m")SIGTERM handover, ms (median / min / max): leaderrun $t_lr_med / $t_lr_min / $t_lr_max (SIGTERM to child end: median $s_med ms; exit status $statuses)"
  say "$(tag "$m")supervisor SIGKILLed, kill to the standby's child start, ms (p50 / p99): leaderrun $k_lr_50 / $k_lr_99 (old child still there at the takeover: $k_lr_old of ${done_runs[$m/kill-lr]}); etcdctl lock $k_lk_50 / $k_lk_99 (old child runs on: $k_lk_old of ${done_runs[$m/kill-lock]})"
  heading="figure"
  [[ -z $TLS ]] || { if [[ $m == tls ]]; then heading="figure, over TLS (mutual)"; else heading="figure, plain (no TLS)"; fi; }
  table[$m]=$(
    printf '%-32s %-12s %s\n' "$heading" "leaderrun" "etcdctl lock"
    printf '%-32s %-12s %-12s %s\n' "child-exit handover (median)" "$(one "$e_lr_med")" "$(one "$e_lk_med")" "ratio $ratio"
    printf '%-32s %-12s %s\n' "SIGTERM handover (median)" "$(one "$t_lr_med")" "${term_lock_summary[$m]}"
    printf '%-32s %-12s %s\n' "supervisor SIGKILLed (p50/p99)" "$(one "$k_lr_50") / $(one "$k_lr_99")" \
      "$(one "$k_lk_50") / $(one "$k_lk_99") (TTL-bound; old child runs on: $k_lk_old of ${done_runs[$m/kill-lock]})"
    printf '%-32s %-12s %s\n' "peak RSS (VmHWM)" "$(mib "${hwm_lr[$m]}") MiB" "$(mib "${hwm_lk[$m]}") MiB"
    printf '%-32s %-12s %-12s %s\n' "peak RSS, --status-addr scraped" "$(mib "${hwm_http[$m]}") MiB" "$(mib "${hwm_lk[$m]}") MiB" \
      "ratio $(awk -v a="${hwm_http[$m]:-0}" -v b="${hwm_lk[$m]:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')"
    printf '%-32s %-12s %s\n' "/leader at 100 rps, p50 / p99" "$(pct "$r.leader.lat" 50) / $(pct "$r.leader.lat" 99) ms" "-"
  )
done
for m in "${MODES[@]}"; do
  echo
  printf '%s\n' "${table[$m]}"
done
echo
etcd_v=$(etcd --version | sed -n 's/^etcd Version: //p')
say "gaps: CLOCK_MONOTONIC from the old child's last instant to the new child's first, the standby"
if [[ -z $TLS ]]; then
  say "queued >= $MIN_QUEUED_MS ms before (see SETTLE_MS in this script); $(nproc) CPUs, loopback, one etcd $etcd_v"
else
  say "queued >= $MIN_QUEUED_MS ms before (see SETTLE_MS in this script); $(nproc) CPUs, loopback, two etcd $etcd_v"
  say "(plain http, and https with --client-cert-auth), each run on one of them, plain and TLS runs interleaved"
fi
say "RSS in MiB (VmHWM is in KiB); TTL $TTL s for both tools"
