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
#   health failover      a leader with --health-cmd (every 500 ms, 2 failures in a row, 500 ms
#                        timeout) whose check starts failing at a recorded instant; time from
#                        that instant to the standby's child start, p50 / p99. `etcdctl lock` has
#                        no health checks.
#   scale (--candidates) N candidates queued on one election (TTL 10 s, the default), then N
#                        `etcdctl lock` waiters on one lock, one tool at a time, a fresh etcd
#                        for each N: over an idle window, etcd's received gRPC messages per
#                        second (its /metrics), the candidates' CPU (% of one core) and RSS;
#                        then, with both tools' N queued, child-exit and SIGTERM handovers, the
#                        tools taking turns (medians)
#
# Usage: bash scripts/bench.sh [--tls] [--runs N] [--candidates N[,N...]]
#
#   --runs N          medians of N runs (default 7)
#   --tls             also measure the two-candidate figures over mutual TLS, interleaved with
#                     the plain runs, and print both tables: a second throwaway etcd serves https
#                     on 127.0.0.1 with --client-cert-auth, with a CA, server and client
#                     certificate made in the temp dir (openssl, ECDSA P-256); leaderrun and
#                     `etcdctl lock` both use --cacert/--cert/--key.
#   --candidates N    add the scale rows for N candidates (2 to 500; a list 3,100,200 or the
#                     option repeated); plain etcd only. Without it, only the two-candidate rows.
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

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
SCALE=()         # --candidates: the N of each scale run
add_candidates() {
  local n
  [[ $1 =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "bench: --candidates takes numbers 2..500, comma-separated, not '$1'" >&2; exit 2; }
  for n in ${1//,/ }; do
    ((10#$n >= 2 && 10#$n <= 500)) || { echo "bench: --candidates takes 2..500, not $n" >&2; exit 2; }
    SCALE+=($((10#$n)))
  done
}
while (($#)); do
  case $1 in
    --runs) [[ ${2:-} =~ ^[1-9][0-9]?$ ]] || { echo "bench: --runs takes 1..99" >&2; exit 2; }; RUNS=$2; shift 2 ;;
    --runs=*) RUNS=${1#--runs=}; [[ $RUNS =~ ^[1-9][0-9]?$ ]] || { echo "bench: --runs takes 1..99" >&2; exit 2; }; shift ;;
    --tls) TLS=1; shift ;;
    --candidates) add_candidates "${2:-}"; shift 2 ;;
    --candidates=*) add_candidates "${1#--candidates=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

say() { printf 'bench: %s\n' "$*"; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

# N candidates hold one client connection each to etcd, which inherits this shell's limit: raise
# the soft limit of open files to fit the largest N (a log file, a connection, etcd's side of it,
# and room for etcd's own files).
if ((${#SCALE[@]})); then
  max_n=$(printf '%s\n' "${SCALE[@]}" | sort -n | tail -n 1)
  fds=$((max_n * 4 + 1024))
  if (($(ulimit -n) < fds)); then
    ulimit -n "$fds" 2>/dev/null || die "--candidates $max_n needs $fds open files; ulimit -n is $(ulimit -n) (hard limit $(ulimit -Hn))"
  fi
fi

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
# The polls that wait for a handover fork nothing: a fork and exec (sleep, awk, grep) takes a
# millisecond of CPU, and on 2 cores it would land inside the gap being measured. `nap` sleeps
# by reading, with a timeout, a FIFO that never has data; `has_line` reads with builtins.
mkfifo "$tmp/nap"
exec {nap_fd}<>"$tmp/nap"
nap() { read -r -t "$1" -u "$nap_fd" _ || true; }
# has_line FILE WORD: FILE has a line starting with WORD.
has_line() {
  local w
  [[ -r $1 ]] || return 1
  while read -r -a w; do [[ ${w[0]:-} == "$2" ]] && return 0; done <"$1"
  return 1
}
alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }
# Gone for good: no such process, or a zombie not reaped yet. Without a fork: it is asked of
# hundreds of processes at a time.
gone() {
  local line
  { read -r line <"/proc/$1/stat"; } 2>/dev/null || return 0
  line=${line##*) }
  [[ ${line:0:1} == Z ]]
}
wait_gone() {   # PID HUNDREDTHS
  local i
  for ((i = 0; i < $2; i++)); do gone "$1" && return 0; nap 0.01; done
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
  # Up to 5 s for all of them together, then SIGKILL to what is left of ours (by the marker, so
  # a pid reused by someone else is never hit).
  kill_marked TERM
  local i left
  for ((i = 0; i < 100; i++)); do
    left=0
    for pid in "${started[@]}"; do gone "$pid" || { left=1; break; }; done
    ((left)) || break
    sleep 0.05
  done
  ((left)) && kill_marked KILL
  for pid in "${started[@]}"; do { wait "$pid"; } 2>/dev/null; done
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
# lr NAME ID FILE MS [OPTION...]: a leaderrun candidate whose child is `stamp FILE MS`, with
# any further leaderrun options; sets $last_pid.
lr() {
  "$bin" "${CONN[@]}" --election "$1" --id "$2" --ttl "$TTL" --on-exit exit "${@:5}" \
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
  for ((i = 0; i < $3; i++)); do has_line "$1" "$2" && return 0; nap 0.01; done
  has_line "$1" "$2"
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


# The health check of the health failover: every 500 ms, unhealthy after 2 failures in a row.
HEALTH=(--health-interval 500ms --health-retries 2 --health-timeout 500ms)

# One handover in the current mode. KIND: exit-lr | exit-lock | term-lr | kill-lr | kill-lock |
# health-lr. Appends the gap (ms) to $tmp/MODE.KIND.ms, or returns 1 (run discarded, reason in
# $why). Runs in this shell, so cleanup knows its pids.
handover() {
  local kind=$1 run=$2 name="$1-$2" ms_a queued t_kill r="$tmp/$mode"
  a="$tmp/$mode.$1-$2.a" b="$tmp/$mode.$1-$2.b" pa="" pb=""
  local start=lr child_a opts_a=() opts_b=()
  [[ $kind == exit-lock || $kind == kill-lock ]] && start=lk
  if [[ $kind == exit-* ]]; then ms_a=$CHILD_MS; else ms_a=0; fi
  # The check fails once the file FILE.sick exists: the instant it is made is the failure's.
  if [[ $kind == health-lr ]]; then
    opts_a=(--health-cmd "test ! -e '$a.sick'" "${HEALTH[@]}")
    opts_b=(--health-cmd "test ! -e '$b.sick'" "${HEALTH[@]}")
  fi
  $start "$name" A "$a" "$ms_a" ${opts_a[@]+"${opts_a[@]}"}; pa=$last_pid
  wait_line "$a" start 1000 || { why="leader's child did not start in 10 s"; teardown; return 1; }
  # Only now the standby: no race for the first turn.
  $start "$name" B "$b" 0 ${opts_b[@]+"${opts_b[@]}"}; pb=$last_pid
  wait_keys "$name" 2 250 || { why="standby not queued in 5 s"; teardown; return 1; }
  queued=$(mono_now)
  if [[ $kind == health-lr ]]; then
    pause "$(awk -v m="$SETTLE_MS" 'BEGIN { printf "%.3f", m / 1000 }')"
    t_kill=$(mono_now)
    : >"$a.sick"
    # Detection takes 2 to 3 intervals (the failure falls anywhere in one); then a handover.
    wait_line "$b" start 1500 || { why="no health failover in 15 s"; teardown; return 1; }
    ms "$t_kill" "$(field "$b" start 2)" >>"$r.health-lr.ms"
    [[ -z $(field "$a" end 2) ]] || ms "$(field "$a" end 2)" "$(field "$b" start 2)" >>"$r.health-lr.gap.ms"
    teardown
    return 0
  fi
  if [[ $kind == term-lr || $kind == kill-* ]]; then
    pause "$(awk -v m="$SETTLE_MS" 'BEGIN { printf "%.3f", m / 1000 }')"
    t_kill=$(mono_now)
    # A SIGKILLed job is reaped without a "Killed" notice once disowned.
    if [[ $kind == term-lr ]]; then kill -TERM "$pa"; else disown "$pa" 2>/dev/null || true; kill -KILL "$pa"; fi
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
  wait_line "$b" start 1000 || { why="no handover in 10 s"; teardown; return 1; }
  # Checked once the new child runs: nothing forks during the handover.
  if [[ $kind != term-lr ]] && ((queued + MIN_QUEUED_MS * 1000000 > $(field "$a" end 2))); then
    why="standby queued only $(ms "$queued" "$(field "$a" end 2)") ms before the child ended (want >= $MIN_QUEUED_MS)"
    teardown; return 1
  fi
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
say "child-exit handover (child lives ${CHILD_MS} ms), SIGTERM handover, SIGKILLed supervisor and health failover, $RUNS runs each"
KINDS=(exit-lr exit-lock term-lr kill-lr kill-lock health-lr)
declare -A done_runs=() discarded=()
for m in "${MODES[@]}"; do
  for kind in "${KINDS[@]}"; do : >"$tmp/$m.$kind.ms"; done_runs[$m/$kind]=0; done
  : >"$tmp/$m.term-lr.stop.ms"; : >"$tmp/$m.health-lr.gap.ms"; : >"$tmp/$m.term-lr.status"; : >"$tmp/$m.kill-lr.old"; : >"$tmp/$m.kill-lock.old"
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
    printf 'bench:   %sround %d: leaderrun exit %s ms | etcdctl lock exit %s ms | leaderrun SIGTERM %s ms | SIGKILL: leaderrun %s ms, etcdctl lock %s ms | health failover %s ms\n' "$(tag "$mode")" "$attempt" \
      "$(tail -n 1 "$tmp/$mode.exit-lr.ms" 2>/dev/null)" "$(tail -n 1 "$tmp/$mode.exit-lock.ms" 2>/dev/null)" "$(tail -n 1 "$tmp/$mode.term-lr.ms" 2>/dev/null)" \
      "$(tail -n 1 "$tmp/$mode.kill-lr.ms" 2>/dev/null)" "$(tail -n 1 "$tmp/$mode.kill-lock.ms" 2>/dev/null)" "$(tail -n 1 "$tmp/$mode.health-lr.ms" 2>/dev/null)"
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
# lat_pct FILE P: the P-th percentile (nearest rank) of hget's latencies in FILE, in ms.
lat_pct() { awk '{ print $1 }' "$1" | sort -g | awk -v p="$2" '{ v[NR] = $1 } END {
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

# ---- 4: scale (--candidates): N candidates on one election; idle one tool at a time, handovers in turn
SCALE_TTL=10     # leaderrun's default TTL: the idle figures are quoted at it (etcdctl lock the same)
IDLE_S=30        # the idle window: several keepalive intervals, so that their phases matter little
IDLE_SETTLE_S=3  # after the last candidate queued, before the window opens
BATCH=20         # candidates started at once; each batch is queued in etcd before the next
CLK_TCK=$(getconf CLK_TCK)
EP_PLAIN=$EP     # the scale rows use a plain etcd of their own for each N (scale_etcd)
etcd_plain=""
declare -A sc=()   # sc[N/TOOL/FIGURE]: the scale figures, for the summary
sc_pids=()         # the supervisors (leaderrun or etcdctl lock) of the current tool (sc_use)
declare -A sc_saved=()  # the other tool's supervisors, while sc_pids holds the current one's
sc_cur=""
# sc_use TOOL: make TOOL's supervisors the current ones (sc_pids), keeping the other's aside.
sc_use() {
  [[ $sc_cur == "$1" ]] && return 0
  [[ -z $sc_cur ]] || sc_saved[$sc_cur]="${sc_pids[*]-}"
  read -ra sc_pids <<<"${sc_saved[$1]:-}"
  sc_cur=$1
}

# cpu_ns PID...: CPU time used so far by those of PIDS still alive, all their threads, in ns
# (no fork per pid). From /proc/PID/task/TID/schedstat (the scheduler's run time, to the ns;
# /proc/PID/schedstat is the main thread's only): utime + stime in /proc/PID/stat are whole
# clock ticks per process, and an idle standby uses less than one tick in the window. Without
# schedstat (a kernel without it), utime + stime it is.
cpu_ns() {
  local p line f t=0 task
  for p in "$@"; do
    if [[ -r /proc/$p/schedstat ]]; then
      for task in /proc/"$p"/task/*/schedstat; do
        { read -r line <"$task"; } 2>/dev/null && t=$((t + ${line%% *}))
      done
    elif { read -r line <"/proc/$p/stat"; } 2>/dev/null; then
      read -ra f <<<"${line##*) }"
      t=$((t + (f[11] + f[12]) * 1000000000 / CLK_TCK))
    fi
  done
  echo "$t"
}
ppid_of() {
  local line f
  { read -r line <"/proc/$1/stat"; } 2>/dev/null || return 0
  read -ra f <<<"${line##*) }"
  echo "${f[1]}"
}
# guardians PID...: the leaderrun-guard processes whose parent is one of PIDS.
guardians() {
  local -A want=()
  local p line f
  for p in "$@"; do want[$p]=1; done
  for p in /proc/[0-9]*; do
    { read -r line <"$p/stat"; } 2>/dev/null || continue
    [[ $line == *"(leaderrun-guard)"* ]] || continue
    read -ra f <<<"${line##*) }"
    [[ -n ${want[${f[1]}]:-} ]] && echo "${p#/proc/}"
  done
  return 0
}
# live PID...: those of PIDS not gone.
live() { local p; for p in "$@"; do gone "$p" || echo "$p"; done; }
# rss PID...: "SUM MEDIAN COUNT" of VmRSS in KiB.
rss() {
  local p files=()
  for p in "$@"; do files+=("/proc/$p/status"); done
  ((${#files[@]})) || { echo "0 0 0"; return 0; }
  awk '$1 == "VmRSS:" { print $2 }' "${files[@]}" 2>/dev/null | sort -n | awk '{ v[NR] = $1; s += $1 }
    END { if (NR == 0) { print "0 0 0"; exit }
          m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print s, m, NR }'
}
# pss PID...: the sum of their proportional set sizes in KiB (shared pages counted once).
pss() {
  local p files=()
  for p in "$@"; do files+=("/proc/$p/smaps_rollup"); done
  ((${#files[@]})) || { echo 0; return 0; }
  awk '$1 == "Pss:" { s += $2 } END { print s + 0 }' "${files[@]}" 2>/dev/null
}
# etcd_msgs: etcd's grpc_server_msg_received_total, summed over all its labels.
etcd_msgs() {
  curl -fsS --max-time 5 "http://$EP_PLAIN/metrics" |
    awk '/^grpc_server_msg_received_total[{ ]/ { s += $NF } END { printf "%.0f\n", s }'
}
# holder FILE: the pid of the child in FILE that started and has not ended (the leader's).
holder() { awk '$1 == "start" { s[$3] = 1 } $1 == "end" { delete s[$3] } END { for (p in s) print p }' "$1" 2>/dev/null | head -n 1; }
# sc_wait_keys NAME COUNT SECONDS: wait (polling every 0.2 s) until NAME/ holds COUNT keys.
sc_wait_keys() {
  local i
  for ((i = 0; i < $3 * 5; i++)); do
    (($(ctl get --prefix "$1/" --keys-only 2>/dev/null | grep -c . || true) >= $2)) && return 0
    sleep 0.2
  done
  return 1
}
# sc_add TOOL NAME ID FILE: one more candidate (lr or lk) with the child `stamp FILE 0`.
sc_add() { "$1" "$2" "$3" "$4" 0; sc_pids+=("$last_pid"); }
# sc_reap PID: reap one supervisor that ended and drop it from sc_pids (its pid may be reused).
sc_reap() {
  local p keep=()
  wait_gone "$1" 500 || true
  { wait "$1"; } 2>/dev/null || true
  for p in "${sc_pids[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  sc_pids=(${keep[@]+"${keep[@]}"})
}
# sc_handover KIND FILE OUT: end the leading child's turn, with the queue settled: exit (SIGTERM
# to the child itself, which handles it and exits 0: to its supervisor, the child ended on its
# own) or term (SIGTERM to the leading supervisor). Appends the old child's end to the new
# child's start (ms) to OUT, or returns 1 with $why.
sc_handover() {
  local kind=$1 f=$2 out=$3 c sup i fd w started="" t_end t_new
  c=$(holder "$f")
  [[ -n $c ]] || { why="no child running"; return 1; }
  sup=$(ppid_of "$c")
  # Follow FILE from its end with builtins (see nap): each stamp line is one write(2).
  exec {fd}<"$f"
  while read -r -u "$fd" _; do :; done
  if [[ $kind == term ]]; then kill -TERM "$sup"; else kill -TERM "$c"; fi
  for ((i = 0; i < 1000; i++)); do
    while read -r -a w -u "$fd"; do [[ ${w[0]:-} == start ]] && started=1; done
    [[ -n $started ]] && break
    nap 0.01
  done
  exec {fd}<&-
  ((i < 1000)) || { why="no handover in 10 s"; return 1; }
  t_end=$(awk -v p="$c" '$1 == "end" && $3 == p { print $2; exit }' "$f")
  t_new=$(awk '$1 == "start" { t = $2 } END { print t }' "$f")
  [[ -n $t_end ]] || { why="the old child left no end line"; return 1; }
  ms "$t_end" "$t_new" >>"$out"
  sc_reap "$sup"
}
# sc_stop FILE: the running child first (etcdctl lock lets go only when it ends), then SIGTERM
# to every supervisor at once; up to 10 s for all, then SIGKILL to the rest (not reaped yet, so
# the pids are still ours); reap.
sc_stop() {
  local c p i left=0 killed=0
  c=$(holder "$1")
  [[ -z $c ]] || kill -TERM "$c" 2>/dev/null || true
  for p in "${sc_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for ((i = 0; i < 200; i++)); do
    left=0
    for p in "${sc_pids[@]}"; do gone "$p" || { left=1; break; }; done
    ((left)) || break
    sleep 0.05
  done
  if ((left)); then
    for p in "${sc_pids[@]}"; do gone "$p" || { kill -KILL "$p" 2>/dev/null; killed=$((killed + 1)); }; done
    say "    $killed did not stop within 10 s of SIGTERM: SIGKILLed"
  fi
  for p in "${sc_pids[@]}"; do { wait "$p"; } 2>/dev/null || true; done
  sc_pids=()
}
# sc_idle N TOOL: the idle figures of N queued candidates, over IDLE_S seconds.
sc_idle() {
  local n=$1 tool=$2 sups guards procs t0 t1 m0 m1 c0 c1 e0 e1 s
  mapfile -t sups < <(live "${sc_pids[@]}")
  guards=()
  [[ $tool == lk ]] || mapfile -t guards < <(guardians "${sups[@]}")
  procs=("${sups[@]}" ${guards[@]+"${guards[@]}"})
  t0=$(mono_now); m0=$(etcd_msgs) || die "cannot read etcd's /metrics"
  c0=$(cpu_ns "${procs[@]}"); e0=$(cpu_ns "$etcd_plain")
  pause "$IDLE_S"
  t1=$(mono_now); m1=$(etcd_msgs) || die "cannot read etcd's /metrics"
  c1=$(cpu_ns "${procs[@]}"); e1=$(cpu_ns "$etcd_plain")
  s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
  sc[$n/$tool/msgs]=$(awk -v d="$((m1 - m0))" -v s="$s" 'BEGIN { printf "%.1f", d / s }')
  sc[$n/$tool/per]=$(awk -v d="$((m1 - m0))" -v s="$s" -v n="$n" 'BEGIN { printf "%.3f", d / s / n }')
  sc[$n/$tool/cpu]=$(awk -v d="$((c1 - c0))" -v s="$s" 'BEGIN { printf "%.2f", 100 * d / 1e9 / s }')
  sc[$n/$tool/etcdcpu]=$(awk -v d="$((e1 - e0))" -v s="$s" 'BEGIN { printf "%.2f", 100 * d / 1e9 / s }')
  read -r "sc[$n/$tool/rss]" "sc[$n/$tool/rssmed]" "sc[$n/$tool/count]" < <(rss "${sups[@]}")
  read -r "sc[$n/$tool/grss]" "sc[$n/$tool/grssmed]" "sc[$n/$tool/gcount]" < <(rss ${guards[@]+"${guards[@]}"})
  sc[$n/$tool/pss]=$(pss "${procs[@]}")
  say "    idle ${s} s: etcd received ${sc[$n/$tool/msgs]} msgs/s (${sc[$n/$tool/per]} per candidate), etcd CPU ${sc[$n/$tool/etcdcpu]} %;" \
    "CPU of the ${#procs[@]} processes ${sc[$n/$tool/cpu]} % of one core"
  say "    RSS: ${sc[$n/$tool/count]} supervisors $(mib "${sc[$n/$tool/rss]}") MiB (median $(mib "${sc[$n/$tool/rssmed]}") MiB)$(
    [[ $tool == lk ]] || printf ', %s guardians %s MiB (median %s MiB)' "${sc[$n/$tool/gcount]}" "$(mib "${sc[$n/$tool/grss]}")" "$(mib "${sc[$n/$tool/grssmed]}")"
  ); PSS of all $(mib "${sc[$n/$tool/pss]}") MiB"
}

# stop_etcd PID: SIGTERM, up to 5 s, SIGKILL; reap.
stop_etcd() {
  alive "$1" || return 0
  kill -TERM "$1" 2>/dev/null || true
  wait_gone "$1" 500 || kill -KILL "$1" 2>/dev/null || true
  { wait "$1"; } 2>/dev/null || true
}
# scale_etcd NAME: a fresh plain etcd for one N (the one before it stopped), so that each N starts
# from the same empty store and no earlier run's leases or watches are in the counts. (On one etcd
# reused for every N, 200 leaderruns queued just after 100 `etcdctl lock` waiters had been stopped
# were seen to stall at the first handover: the next in line's campaign, waiting inside etcd's
# election service, did not return; a stall is reported as such, and that tool's runs end there.)
scale_etcd() {
  stop_etcd "$etcd_pid"; stop_etcd "$etcd_plain_pid"; etcd_plain_pid=""
  start_etcd "$1"
  EP_PLAIN=$ETCD_ENDPOINT; etcd_plain=$etcd_pid
  CONN_plain=(--endpoints "$EP_PLAIN")
  use_mode plain
}

if ((${#SCALE[@]})); then
  scale_etcd scale
  BASE_TTL=$TTL
  TTL=$SCALE_TTL
  say "scale: N candidates on one election, TTL $TTL s, a fresh etcd for each N; idle figures one tool at a time over ${IDLE_S} s, then handovers with both tools queued, in turn"
  t0=$(mono_now); m0=$(etcd_msgs) || die "cannot read etcd's /metrics at http://$EP_PLAIN/metrics"
  pause 5
  t1=$(mono_now); m1=$(etcd_msgs) || die "cannot read etcd's /metrics"
  sc_base=$(awk -v d="$((m1 - m0))" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", d / ((b - a) / 1e9) }')
  say "  etcd with no candidates: $sc_base msgs/s received"
  first=1
  # sc_queue TOOL NAME FILE N: N candidates of TOOL on NAME, the first alone (it leads), the
  # others in batches, each queued in etcd before the next; sets sc_ids[TOOL] to the last id.
  declare -A sc_ids=()
  sc_queue() {
    local tool=$1 name=$2 f=$3 n=$4 id=1 j ts
    ts=$(mono_now)
    sc_add "$tool" "$name" c1 "$f"
    wait_line "$f" start 1000 || die "$tool: the first candidate's child did not start in 10 s"
    while ((id < n)); do
      for ((j = 0; j < BATCH && id < n; j++)); do id=$((id + 1)); sc_add "$tool" "$name" "c$id" "$f"; done
      sc_wait_keys "$name" "$id" 60 || die "$tool: $id candidates not queued within 60 s"
    done
    sc_ids[$tool]=$id
    say "    $n queued on $name in $(ms "$ts" "$(mono_now)") ms"
  }
  for n in "${SCALE[@]}"; do
    ((first)) || scale_etcd "scale-$n"
    first=0
    # The idle figures, one tool at a time: only its N candidates on etcd.
    for tool in lr lk; do
      if [[ $tool == lr ]]; then who=leaderrun; else who="etcdctl lock"; fi
      sc_use "$tool"
      name="scale-$n-$tool"; f="$tmp/scale.$n.$tool.stamps"; : >"$f"
      say "  $n x $who on $name:"
      sc_queue "$tool" "$name" "$f" "$n"
      pause "$IDLE_SETTLE_S"
      sc_idle "$n" "$tool"
      # leaderrun's go, so that etcdctl lock's idle window has etcd to itself.
      [[ $tool == lk ]] || sc_stop "$f"
    done
    # The handovers, the two tools taking turns (so that a slower minute of this shared machine
    # weighs on both alike), each with N queued: leaderrun's N again, on a new election.
    sc_use lr
    say "  handovers with $n queued, leaderrun and etcdctl lock in turn:"
    sc_queue lr "scale-$n-lr-turns" "$tmp/scale.$n.lr.turns" "$n"
    pause "$IDLE_SETTLE_S"
    declare -A sc_name=([lr]="scale-$n-lr-turns" [lk]="scale-$n-lk") sc_file=([lr]="$tmp/scale.$n.lr.turns" [lk]="$tmp/scale.$n.lk.stamps")
    declare -A stalled=()
    for tool in lr lk; do
      if [[ $tool == lr ]]; then sc_kinds=(exit term); else sc_kinds=(exit); fi
      for kind in "${sc_kinds[@]}"; do : >"$tmp/scale.$n.$tool.$kind.ms"; done
    done
    for ((k = 1; k <= RUNS; k++)); do
      for tool in lr lk; do
        [[ -z ${stalled[$tool]:-} ]] || continue
        sc_use "$tool"
        if [[ $tool == lr ]]; then sc_kinds=(exit term); else sc_kinds=(exit); fi
        for kind in "${sc_kinds[@]}"; do
          why=""
          # After a failed handover nothing may lead any more: stop this tool's runs there.
          sc_handover "$kind" "${sc_file[$tool]}" "$tmp/scale.$n.$tool.$kind.ms" ||
            { stalled[$tool]="$kind handover $k: $why"; say "    $tool: ${stalled[$tool]}"; break; }
          sc_ids[$tool]=$((sc_ids[$tool] + 1)); sc_add "$tool" "${sc_name[$tool]}" "c${sc_ids[$tool]}" "${sc_file[$tool]}"
          sc_wait_keys "${sc_name[$tool]}" "$n" 30 || say "    $tool: not $n queued again within 30 s"
          pause "$(awk -v m="$SETTLE_MS" 'BEGIN { printf "%.3f", 2 * m / 1000 }')"
        done
      done
    done
    for tool in lr lk; do
      if [[ $tool == lr ]]; then who=leaderrun; sc_kinds=(exit term); else who="etcdctl lock"; sc_kinds=(exit); fi
      for kind in "${sc_kinds[@]}"; do
        read -r med lo hi < <(stats "$tmp/scale.$n.$tool.$kind.ms")
        sc[$n/$tool/$kind]=$med
        say "    $who: $kind handover with $n queued, ms (median / min / max of $(grep -c . "$tmp/scale.$n.$tool.$kind.ms" || true)): $med / $lo / $hi"
      done
      [[ -z ${stalled[$tool]:-} ]] || sc[$n/$tool/stalled]=${stalled[$tool]}
      sc_use "$tool"
      sc_stop "${sc_file[$tool]}"
    done
  done
  TTL=$BASE_TTL
fi

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
  h_50=$(pct "$r.health-lr.ms" 50); h_99=$(pct "$r.health-lr.ms" 99)
  read -r h_gap_med _ _ < <(stats "$r.health-lr.gap.ms")
  say "$(tag "$m")runs kept: leaderrun exit ${done_runs[$m/exit-lr]}, etcdctl lock exit ${done_runs[$m/exit-lock]}, leaderrun SIGTERM ${done_runs[$m/term-lr]}, leaderrun SIGKILL ${done_runs[$m/kill-lr]}, etcdctl lock SIGKILL ${done_runs[$m/kill-lock]}, health failover ${done_runs[$m/health-lr]}; discarded ${discarded[$m]}"
  say "$(tag "$m")child-exit handover, ms (median / min / max): leaderrun $e_lr_med / $e_lr_min / $e_lr_max; etcdctl lock $e_lk_med / $e_lk_min / $e_lk_max"
  say "$(tag "$m")SIGTERM handover, ms (median / min / max): leaderrun $t_lr_med / $t_lr_min / $t_lr_max (SIGTERM to child end: median $s_med ms; exit status $statuses)"
  say "$(tag "$m")supervisor SIGKILLed, kill to the standby's child start, ms (p50 / p99): leaderrun $k_lr_50 / $k_lr_99 (old child still there at the takeover: $k_lr_old of ${done_runs[$m/kill-lr]}); etcdctl lock $k_lk_50 / $k_lk_99 (old child runs on: $k_lk_old of ${done_runs[$m/kill-lock]})"
  say "$(tag "$m")health failover (${HEALTH[*]}), failure to the standby's child start, ms (p50 / p99): leaderrun $h_50 / $h_99 (old child's end to the new child's start: median $h_gap_med ms); etcdctl lock has no health checks"
  heading="figure"
  [[ -z $TLS ]] || { if [[ $m == tls ]]; then heading="figure, over TLS (mutual)"; else heading="figure, plain (no TLS)"; fi; }
  table[$m]=$(
    printf '%-32s %-20s %s\n' "$heading" "leaderrun" "etcdctl lock"
    printf '%-32s %-20s %-12s %s\n' "child-exit handover (median)" "$(one "$e_lr_med")" "$(one "$e_lk_med")" "ratio $ratio"
    printf '%-32s %-20s %s\n' "SIGTERM handover (median)" "$(one "$t_lr_med")" "${term_lock_summary[$m]}"
    printf '%-32s %-20s %s\n' "supervisor SIGKILLed (p50/p99)" "$(one "$k_lr_50") / $(one "$k_lr_99")" \
      "$(one "$k_lk_50") / $(one "$k_lk_99") (TTL-bound; old child runs on: $k_lk_old of ${done_runs[$m/kill-lock]})"
    printf '%-32s %-20s %s\n' "health failover (p50/p99)" "$(one "$h_50") / $(one "$h_99")" "no health checks"
    printf '%-32s %-20s %s\n' "peak RSS (VmHWM)" "$(mib "${hwm_lr[$m]}") MiB" "$(mib "${hwm_lk[$m]}") MiB"
    printf '%-32s %-20s %-12s %s\n' "peak RSS, --status-addr scraped" "$(mib "${hwm_http[$m]}") MiB" "$(mib "${hwm_lk[$m]}") MiB" \
      "ratio $(awk -v a="${hwm_http[$m]:-0}" -v b="${hwm_lk[$m]:-0}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')"
    printf '%-32s %-20s %s\n' "/leader at 100 rps, p50 / p99" "$(lat_pct "$r.leader.lat" 50) / $(lat_pct "$r.leader.lat" 99) ms" "-"
  )
done
for m in "${MODES[@]}"; do
  echo
  printf '%s\n' "${table[$m]}"
done
if ((${#SCALE[@]})); then
  echo
  printf '%-40s %-30s %s\n' "scale: N on one election, TTL $SCALE_TTL s" "leaderrun" "etcdctl lock"
  for n in "${SCALE[@]}"; do
    printf '%-40s %-30s %s\n' "N=$n: child-exit handover (median)" "$(one "${sc[$n/lr/exit]:--}")" "$(one "${sc[$n/lk/exit]:--}")"
    [[ -z ${sc[$n/lr/stalled]:-} ]] || printf '%-40s %s\n' "N=$n: leaderrun STALLED" "${sc[$n/lr/stalled]}"
    [[ -z ${sc[$n/lk/stalled]:-} ]] || printf '%-40s %s\n' "N=$n: etcdctl lock STALLED" "${sc[$n/lk/stalled]}"
    printf '%-40s %-30s %s\n' "N=$n: SIGTERM handover (median)" "$(one "${sc[$n/lr/term]:--}")" "n/a (SIGTERM does not hand over)"
    printf '%-40s %-30s %s\n' "N=$n: idle etcd msgs/s (per candidate)" "${sc[$n/lr/msgs]:--} (${sc[$n/lr/per]:--})" "${sc[$n/lk/msgs]:--} (${sc[$n/lk/per]:--})"
    printf '%-40s %-30s %s\n' "N=$n: idle CPU, % of one core" "${sc[$n/lr/cpu]:--} %" "${sc[$n/lk/cpu]:--} %"
    printf '%-40s %-30s %s\n' "N=$n: RSS sum (median per supervisor)" \
      "$(mib "$((${sc[$n/lr/rss]:-0} + ${sc[$n/lr/grss]:-0}))") MiB ($(mib "${sc[$n/lr/rssmed]:-0}") + $(mib "${sc[$n/lr/grssmed]:-0}") guard)" \
      "$(mib "${sc[$n/lk/rss]:-0}") MiB ($(mib "${sc[$n/lk/rssmed]:-0}"))"
    printf '%-40s %-30s %s\n' "N=$n: PSS sum" "$(mib "${sc[$n/lr/pss]:-0}") MiB" "$(mib "${sc[$n/lk/pss]:-0}") MiB"
    printf '%-40s %-30s %s\n' "N=$n: etcd's CPU while idle" "${sc[$n/lr/etcdcpu]:--} %" "${sc[$n/lk/etcdcpu]:--} %"
  done
fi
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
if ((${#SCALE[@]})); then
  say "scale: TTL $SCALE_TTL s, a fresh etcd for each N; idle figures over ${IDLE_S} s once all N were queued ${IDLE_SETTLE_S} s; etcd with nothing queued: $sc_base msgs/s;"
  say "CPU: run time (/proc/PID/schedstat) of the supervisors (leaderrun: with their guardians) as % of one core; leaderrun's RSS sum includes its guardians"
fi
