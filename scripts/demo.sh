#!/usr/bin/env bash
# Try leaderrun on one machine: a throwaway etcd on loopback, three candidates (alpha, beta,
# gamma) over a tiny "server", then a graceful handover (SIGTERM to the leader) and a crash
# (SIGKILL to the next leader's leaderrun: its guardian kills the group, then revokes the lease,
# so a standby takes over in milliseconds instead of after the TTL).
#
#   bash scripts/demo.sh            # installs what is missing (scripts/deps.sh), builds, runs
#   DEMO_KEEP=1 bash scripts/demo.sh  # keep the temp dir (etcd data, candidate logs)
#
# Everything it starts is stopped on exit, Ctrl-C included. Only 127.0.0.1 is used.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
TTL=3
ELECTION=demo
IDS=(alpha beta gamma)

say() { printf 'demo: %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }
# Microseconds of wall clock (bash 5's EPOCHREALTIME, decimal point stripped whatever the locale).
now_us() { local t=$EPOCHREALTIME; echo "${t//[!0-9]/}"; }
ms_since() { local t0=$1 t1; t1=$(now_us); awk -v d=$((t1 - t0)) 'BEGIN { printf "%.0f", d / 1000 }'; }

# ---- 1. dependencies and build ------------------------------------------------------------
bash "$root/scripts/deps.sh"
export PATH="$HOME/.cargo/bin:$PATH"
[[ -n ${EPOCHREALTIME:-} ]] || die "needs bash 5 or newer"
say "building leaderrun (cargo build --release)"
bin=$(cd "$root" && cargo build --release --message-format=json-render-diagnostics |
  sed -n 's/.*"executable":"\([^"]*\/leaderrun\)".*/\1/p' | tail -n 1)
[[ -n $bin && -x $bin ]] || die "cargo build did not produce the leaderrun binary"
say "binary: $bin"

# ---- 2. cleanup, whatever happens ---------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/leaderrun-demo.XXXXXX")
etcd_pid=""
declare -A pid_of=()   # candidate id -> leaderrun pid

alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }
# Whether a pid is gone for good (no process, or a zombie nobody reaped yet).
gone() {
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null || true)
  [[ -z $st || $st == Z* ]]
}
# Wait (bounded, in tenths of a second) for a pid to be gone.
wait_gone() {
  local pid=$1 tenths=$2 i
  for ((i = 0; i < tenths; i++)); do gone "$pid" && return 0; sleep 0.1; done
  gone "$pid"
}

cleanup() {
  local rc=$? id pid
  trap - EXIT INT TERM
  set +e
  exec 2>/dev/null   # no job notices ("Killed ...") while tearing down
  for id in "${!pid_of[@]}"; do
    pid=${pid_of[$id]}
    alive "$pid" && kill -TERM "$pid" 2>/dev/null
  done
  for id in "${!pid_of[@]}"; do
    pid=${pid_of[$id]}
    wait_gone "$pid" 50 || { kill -KILL "$pid" 2>/dev/null; say "cleanup: $id did not exit in 5 s, killed"; }
    { wait "$pid"; } 2>/dev/null
  done
  if alive "$etcd_pid"; then
    kill -TERM "$etcd_pid" 2>/dev/null
    wait_gone "$etcd_pid" 50 || kill -KILL "$etcd_pid" 2>/dev/null
    { wait "$etcd_pid"; } 2>/dev/null
  fi
  # A SIGKILLed leaderrun's orphans (see step 6) are ours too: they carry the demo's marker.
  pkill_marker
  if [[ -n ${DEMO_KEEP:-} ]]; then
    say "kept $tmp"
  else
    rm -rf "$tmp"
  fi
  say "cleaned up: etcd, candidates$([[ -n ${DEMO_KEEP:-} ]] || echo " and $tmp") are gone"
  exit "$rc"
}
trap cleanup EXIT
trap 'echo; say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

# The server's processes carry DEMO_DIR=$tmp in their environment: find leftovers by that,
# never by name.
pkill_marker() {
  local p
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [[ $p == "$$" || $p == "$BASHPID" ]] && continue
    if grep -qzxF "DEMO_DIR=$tmp" "/proc/$p/environ" 2>/dev/null; then
      kill -KILL "$p" 2>/dev/null || true
    fi
  done
}

# ---- 3. a throwaway etcd --------------------------------------------------------------------
source "$root/scripts/local-etcd.sh"
start_etcd demo
ENDPOINT=$ETCD_ENDPOINT
export ETCDCTL_API=3
ctl() { timeout 10 etcdctl --endpoints "$ENDPOINT" --command-timeout=3s "$@"; }
say "etcd $(etcd --version | sed -n 's/^etcd Version: //p') listening on $ENDPOINT (data in $tmp)"

# ---- 4. three candidates ---------------------------------------------------------------------
# The "server": records when it starts (for the timings below), then prints a line a second.
# leaderrun sends SIGTERM to its whole process group, so the `sleep` dies too and the trap runs
# at once.
SERVER='echo "$(date +%s%N) $LEADERRUN_ID" >>"$DEMO_DIR/starts"
trap "echo \"    [$LEADERRUN_ID] got SIGTERM, exiting\"; exit 0" TERM
while :; do
  echo "    [$LEADERRUN_ID] serving as $LEADERRUN_ID, fencing token $LEADERRUN_REVISION"
  sleep 1
done'
export DEMO_DIR=$tmp
: >"$tmp/starts"

start_candidate() {
  local id=$1
  "$bin" --endpoints "$ENDPOINT" --election "$ELECTION" --id "$id" --ttl "$TTL" \
    -- sh -c "$SERVER" 2>"$tmp/$id.log" &
  pid_of[$id]=$!
}

starts_count() { wc -l <"$tmp/starts"; }
# Wait (bounded, in tenths of a second) until the server has started more than $1 times;
# prints the new start line ("<wall ns> <id>").
wait_start_after() {
  local n=$1 tenths=$2 i
  for ((i = 0; i < tenths; i++)); do
    if (($(starts_count) > n)); then sed -n "$((n + 1))p" "$tmp/starts"; return 0; fi
    sleep 0.1
  done
  return 1
}

key_count() { ctl get --prefix "$ELECTION/" --keys-only 2>/dev/null | grep -c . || true; }

leader_id() {
  ctl get --prefix "$ELECTION/" --sort-by=CREATE --order=ASCEND --limit=1 --print-value-only 2>/dev/null | head -n 1
}

show_election() {
  local key val first=1
  say "election keys in etcd (\`etcdctl get --prefix $ELECTION/\`, oldest first; the oldest leads):"
  while IFS= read -r key && IFS= read -r val; do
    if ((first)); then printf 'demo:     %s = %-6s <- leader\n' "$key" "$val"; first=0
    else printf 'demo:     %s = %s\n' "$key" "$val"; fi
  done < <(ctl get --prefix "$ELECTION/" --sort-by=CREATE --order=ASCEND)
}

say "starting candidate alpha (leaderrun --ttl $TTL --election $ELECTION --id alpha -- sh -c SERVER)"
start_candidate alpha
line=$(wait_start_after 0 100) || die "alpha did not start its server in 10 s (log: $(tail -n 5 "$tmp/alpha.log"))"
say "alpha leads; starting beta and gamma as standbys"
start_candidate beta
sleep 0.3
start_candidate gamma
# Both standbys have their keys in etcd (bounded wait).
for ((i = 0; i < 50; i++)); do
  [[ $(key_count) == 3 ]] && break
  sleep 0.1
done
sleep 1
show_election
say "the same, as \`etcdctl elect -l $ELECTION\` sees it (it streams; cut after 1 s):"
timeout 1 etcdctl --endpoints "$ENDPOINT" elect -l "$ELECTION" 2>/dev/null | sed 's/^/demo:     /' || true
sleep 1

# ---- 5. graceful handover: SIGTERM to the leader --------------------------------------------
leader=$(leader_id)
[[ -n $leader ]] || die "no leader in etcd"
lpid=${pid_of[$leader]}
n=$(starts_count)
say "(a) SIGTERM to the leader, $leader (leaderrun pid $lpid): it stops its server, resigns, exits"
t0=$(now_us)
kill -TERM "$lpid"
line=$(wait_start_after "$n" 100) || die "no standby took over within 10 s"
new_ns=${line%% *}
new=${line#* }
took=$(awk -v a="$t0" -v b="$new_ns" 'BEGIN { printf "%.0f", (b / 1000 - a) / 1000 }')
status=0
wait_gone "$lpid" 50 || true
{ wait "$lpid"; } 2>/dev/null || status=$?
say "$new took over ${took} ms after the SIGTERM; $leader's leaderrun exited with status $status (its server's)"
unset "pid_of[$leader]"
sleep 2.2

# ---- 6. crash: SIGKILL to the new leader's leaderrun ----------------------------------------
leader=$(leader_id)
[[ -n $leader && -n ${pid_of[$leader]:-} ]] || die "unexpected leader '$leader'"
lpid=${pid_of[$leader]}
# Its children: the server, and the guardian (named leaderrun-guard) that kills the server's
# process group should leaderrun die without doing so.
child=$(pgrep -P "$lpid" | while read -r p; do [[ $(cat "/proc/$p/comm" 2>/dev/null) == leaderrun-guard ]] || echo "$p"; done | head -n 1)
[[ -n $child ]] || die "$leader's leaderrun has no child"
n=$(starts_count)
say "(b) SIGKILL to $leader's leaderrun (pid $lpid; its server is pid $child): no chance to resign"
t0=$(now_us)
kill -KILL "$lpid"
{ wait "$lpid"; } 2>/dev/null || true
unset "pid_of[$leader]"
if wait_gone "$child" 10; then
  say "$leader's server (pid $child) died with it after $(ms_since "$t0") ms (parent-death signal SIGKILL)"
else
  say "$leader's server (pid $child) is STILL RUNNING $(ms_since "$t0") ms after its leaderrun died"
fi
sleep 0.1
left=$(pgrep -g "$child" | xargs -r ps -o pid=,stat=,args= -p 2>/dev/null | awk '$2 !~ /^Z/' || true)
if [[ -n $left ]]; then
  say "its process group is STILL RUNNING:"
  printf '%s\n' "$left" | sed 's/^ */demo:     /'
else
  say "and so did the rest of its process group (its \`sleep\`): leaderrun's guardian process killed it"
fi
say "once that group is gone the guardian revokes the lease (else it would expire after the TTL, ${TTL} s); waiting for a standby..."
line=$(wait_start_after "$n" 150) || die "no standby took over within 15 s"
new_ns=${line%% *}
new=${line#* }
took=$(awk -v a="$t0" -v b="$new_ns" 'BEGIN { printf "%.0f", (b / 1000 - a) / 1000 }')
say "$new took over ${took} ms after the SIGKILL (lease TTL ${TTL} s)"
sleep 2.2
show_election

# ---- 7. stop the last one, show the logs ----------------------------------------------------
for id in "${!pid_of[@]}"; do
  pid=${pid_of[$id]}
  say "SIGTERM to $id (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  wait_gone "$pid" 50 || true
  status=0
  { wait "$pid"; } 2>/dev/null || status=$?
  say "$id exited with status $status"
  unset "pid_of[$id]"
done
say "keys left under $ELECTION/: $(key_count)"

say "from the candidates' logs (leaderrun logs to stderr; here one file per candidate):"
for id in "${IDS[@]}"; do
  say "  --- $id.log"
  grep -E 'lease granted|standby: campaigning|leading|stopping|child exited|child stopped|resigned|withdrawing|WARN|ERROR' \
    "$tmp/$id.log" | sed -E 's/^([0-9T:-]+\.[0-9]{3})[0-9]*Z/\1Z/; s/^/demo:     /' | cut -c1-200 || true
done
say "done"
