#!/usr/bin/env bash
# Builds the Debian package; the last line of its output is the .deb's path
# (target/debian/leaderrun_<version>-1_<arch>.deb).
#
#   bash scripts/package.sh            build it
#   bash scripts/package.sh --check    build it, install it, and check the installed files
#
# The package ([package.metadata.deb] in Cargo.toml): the release binary (cargo build --release,
# reused when fresh), the man pages and the bash, zsh and fish completions generated from the
# clap definitions (examples/generate.rs), the systemd units of systemd/ with the packaged
# binary's path (/usr/bin/leaderrun), /etc/default/leaderrun (packaging/default, a conffile), the
# opt-in drop-ins of systemd/leaderrun@.service.d/ as examples, the DEP-5 copyright file
# (packaging/copyright) and postinst/postrm that reload systemd (packaging/debian/).
# Installs what the build needs (scripts/deps.sh), and cargo-deb (the pinned version below, into
# ~/.cargo/bin) when it is missing.
#
# --check, when run as root on a machine without leaderrun nor /etc/default/leaderrun (and unless
# LEADERRUN_PACKAGE_INSTALL=extract), installs the package with `dpkg -i`, runs the installed
# binary and purges it. Always, in a scratch directory (dpkg-deb -x): every file in place, the
# binary runs (--version, --help), the man pages render, the completions load (bash; zsh and
# fish when installed), the units run the packaged binary, /etc/default/leaderrun sets nothing,
# the maintainer scripts reload systemd, the copyright file names both licenses; and the units
# themselves (systemd-analyze verify with the drop-ins, where systemd-analyze is installed; the
# watchdog against the smallest TTL the units allow; the job's run ID against its timer).
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_DEB_VERSION=3.8.0
ASSETS=target/deb-assets

say() { printf 'package: %s\n' "$*" >&2; }
die() { printf 'package: error: %s\n' "$*" >&2; exit 1; }

check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  *) die "unknown argument '$1' (usage: scripts/package.sh [--check])" ;;
esac

bash scripts/deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null || die "no cargo (bash scripts/deps.sh installs a Rust toolchain)"
if [[ $(cargo deb --version 2>/dev/null) != "cargo-deb $CARGO_DEB_VERSION" ]]; then
  say "installing cargo-deb $CARGO_DEB_VERSION (cargo install, once)"
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi

# ---- the generated assets ----------------------------------------------------------------------
rm -rf "$ASSETS"
say "generating the man pages and completions (examples/generate.rs)"
cargo run --quiet --example generate -- "$ASSETS" >/dev/null
gzip -9n "$ASSETS"/man/*.1
# The units run /usr/local/bin/leaderrun (a binary installed by hand); the package's is in /usr/bin.
mkdir -p "$ASSETS/systemd"
for unit in systemd/*; do
  [[ -f $unit ]] || continue # the drop-ins' directory: examples, see Cargo.toml
  sed 's#/usr/local/bin/leaderrun #/usr/bin/leaderrun #g' "$unit" >"$ASSETS/systemd/${unit##*/}"
done
! grep -q '/usr/local/bin/leaderrun' "$ASSETS"/systemd/* ||
  die "a unit still names /usr/local/bin/leaderrun: $(grep -l '/usr/local/bin/leaderrun' "$ASSETS"/systemd/*)"

# ---- the package -------------------------------------------------------------------------------
say "building the release binary (cargo build --release)"
cargo build --release --quiet --bin leaderrun
deb=$(cargo deb --no-build --quiet)
[[ -f $deb ]] || die "cargo deb gave no package (it said '$deb')"
say "built $deb ($(stat -c %s "$deb") bytes)"

# run_installed BINARY: the installed binary runs, and is this version.
run_installed() {
  local version out
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
  out=$("$1" --version) || die "$1 --version failed"
  # The version, and the commit when built from a git checkout: `leaderrun 0.1.0 (930694a)`.
  [[ $out == "leaderrun $version" || $out =~ ^"leaderrun $version ("[0-9a-f]{7,}")"$ ]] ||
    die "$1 --version says '$out'"
  "$1" --help | grep -q -- '--election' || die "$1 --help"
  "$1" leader --help | grep -q -- '--watch' || die "$1 leader --help"
}

if ((check)); then
  # Everything the package must hold, as installed paths.
  expected=(
    /usr/bin/leaderrun
    /usr/share/man/man1/leaderrun.1.gz
    /usr/share/man/man1/leaderrun-leader.1.gz
    /usr/share/man/man1/leaderrun-list.1.gz
    /usr/share/man/man1/leaderrun-history.1.gz
    /usr/share/bash-completion/completions/leaderrun
    /usr/share/zsh/vendor-completions/_leaderrun
    /usr/share/fish/vendor_completions.d/leaderrun.fish
    /lib/systemd/system/leaderrun@.service
    /lib/systemd/system/leaderrun-job@.service
    /lib/systemd/system/leaderrun-job@.timer
    /etc/default/leaderrun
    /usr/share/doc/leaderrun/copyright
    /usr/share/doc/leaderrun/docs/install.md
    /usr/share/doc/leaderrun/docs/usage.md
    /usr/share/doc/leaderrun/docs/SAFETY.md
    /usr/share/doc/leaderrun/examples/systemd/hardening.conf
    /usr/share/doc/leaderrun/examples/systemd/password.conf
  )
  dpkg-deb --field "$deb" Depends | grep -qx 'libc6 (>= 2.34), libgcc-s1' ||
    die "Depends is '$(dpkg-deb --field "$deb" Depends)'"
  dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - ./conffiles | grep -qx /etc/default/leaderrun ||
    die "/etc/default/leaderrun is not a conffile"
  # Each maintainer script reloads systemd, and only when systemd runs.
  for script in postinst postrm; do
    body=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xOf - "./$script") || die "no $script in the package"
    grep -q 'systemctl --system daemon-reload' <<<"$body" || die "$script does not reload systemd"
    grep -q '/run/systemd/system' <<<"$body" || die "$script does not check that systemd runs"
    sh -n <<<"$body" || die "$script is not valid sh"
  done

  scratch=$(mktemp -d "${TMPDIR:-/tmp}/leaderrun-package.XXXXXX")
  installed=0 how="unpacked"
  cleanup() {
    if ((installed)); then dpkg --purge leaderrun >/dev/null || true; fi
    rm -rf "$scratch"
  }
  trap cleanup EXIT

  # Installed for real where that is harmless; only the binary and dpkg's record are checked
  # there, as a machine may exclude paths from installation (a container's dpkg.cfg.d often
  # drops /usr/share/man and /usr/share/doc).
  # Not where a leaderrun or an /etc/default/leaderrun is already there: the purge would
  # remove them.
  if [[ ${LEADERRUN_PACKAGE_INSTALL:-} != extract && $(id -u) == 0 ]] &&
    [[ ! -e /usr/bin/leaderrun && ! -e /etc/default/leaderrun ]] &&
    ! dpkg-query -W -f '${Status}' leaderrun 2>/dev/null | grep -q installed; then
    say "installing it (dpkg -i; purged afterwards)"
    dpkg -i "$deb" >/dev/null
    installed=1
    [[ $(dpkg-query -W -f '${Status}' leaderrun) == "install ok installed" ]] || die "dpkg says it is not installed"
    dpkg -L leaderrun | grep -qx /usr/bin/leaderrun || die "dpkg -L does not list /usr/bin/leaderrun"
    run_installed /usr/bin/leaderrun
    dpkg --purge leaderrun >/dev/null
    installed=0 how="installed (dpkg -i), run, purged; unpacked"
    [[ ! -e /usr/bin/leaderrun && ! -e /etc/default/leaderrun ]] || die "dpkg --purge left files behind"
  fi

  # Every file, from the package itself.
  root=$scratch/root
  dpkg-deb -x "$deb" "$root"
  for f in "${expected[@]}"; do [[ -f $root$f ]] || die "not in the package: $f"; done
  [[ -x $root/usr/bin/leaderrun ]] || die "/usr/bin/leaderrun is not executable"
  run_installed "$root/usr/bin/leaderrun"

  # The man pages render without warnings (man, else groff, else the roff source is checked).
  for page in "$root"/usr/share/man/man1/leaderrun*.1.gz; do
    if command -v man >/dev/null; then
      text=$(MANWIDTH=100 man --warnings -l "$page" 2>"$scratch/man.err") || die "man -l ${page##*/} failed"
    elif command -v groff >/dev/null; then
      text=$(zcat "$page" | groff -man -Tutf8 -ww 2>"$scratch/man.err") || die "groff ${page##*/} failed"
    else
      text=$(zcat "$page")
      : >"$scratch/man.err"
    fi
    [[ ! -s $scratch/man.err ]] || die "${page##*/}: $(head -n 3 "$scratch/man.err")"
    grep -q -- 'election' <<<"$text" || die "${page##*/} does not mention the election"
  done

  # The completions load: bash registers them; zsh and fish parse them when installed.
  bash -c "source '$root/usr/share/bash-completion/completions/leaderrun' && complete -p leaderrun" >/dev/null ||
    die "the bash completion does not load"
  if command -v zsh >/dev/null; then zsh -n "$root/usr/share/zsh/vendor-completions/_leaderrun" || die "zsh completion"; fi
  if command -v fish >/dev/null; then fish -n "$root/usr/share/fish/vendor_completions.d/leaderrun.fish" || die "fish completion"; fi

  # The units run the installed binary; the default file sets nothing until edited.
  for u in leaderrun@.service leaderrun-job@.service; do
    grep -q '^ExecStart=.*/usr/bin/leaderrun ' "$root/lib/systemd/system/$u" || die "$u does not run /usr/bin/leaderrun"
  done
  ! grep -q '^[^#]' "$root/etc/default/leaderrun" || die "/etc/default/leaderrun sets something"

  # The copyright file: DEP-5, both licenses, each with its text or Debian's copy.
  copyright=$root/usr/share/doc/leaderrun/copyright
  head -n 1 "$copyright" | grep -qx 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/' ||
    die "the copyright file is not DEP-5"
  for l in 'License: MIT or Apache-2.0' 'License: MIT' 'License: Apache-2.0' 'Copyright: .*leaderrun contributors'; do
    grep -qx "$l" "$copyright" || die "the copyright file has no line '$l'"
  done

  # The units. The watchdog (W) must fire before a standby can take over from a frozen leader:
  # W < T - T/5 - max(0.5, T/10) (docs/SAFETY.md), for every TTL down to the 5 s that
  # /etc/default/leaderrun says the units take as they are.
  min_ttl=5
  for u in leaderrun@.service leaderrun-job@.service; do
    w=$(sed -n 's/^WatchdogSec=\([0-9.]*\)s\{0,1\}$/\1/p' "$root/lib/systemd/system/$u")
    [[ -n $w ]] || die "$u: no WatchdogSec= in seconds"
    awk -v w="$w" -v t="$min_ttl" 'BEGIN { m = t / 10; if (m < 0.5) m = 0.5; exit !(w < t - t / 5 - m) }' ||
      die "$u: WatchdogSec=${w}s is not below T - k - m at a TTL of $min_ttl s"
  done
  grep -q "every TTL from $min_ttl up" "$root/etc/default/leaderrun" ||
    die "/etc/default/leaderrun does not state the smallest TTL the units take ($min_ttl)"
  # The job's run ID is the latest tick's: TICK_MINUTES must be the timer's time of day.
  cal=$(sed -n 's/^OnCalendar=\*-\*-\* \([0-9][0-9]\):\([0-9][0-9]\):00 UTC$/\1 \2/p' "$root/lib/systemd/system/leaderrun-job@.timer")
  tick=$(sed -n 's/^Environment=.*TICK_MINUTES=\([0-9]*\).*/\1/p' "$root/lib/systemd/system/leaderrun-job@.service")
  [[ -n $cal && -n $tick ]] || die "leaderrun-job@: no daily OnCalendar= in UTC, or no TICK_MINUTES"
  read -r hh mm <<<"$cal"
  ((10#$hh * 60 + 10#$mm == tick)) || die "leaderrun-job@: TICK_MINUTES=$tick is not the timer's $hh:$mm"
  # systemd's own check, with the drop-ins, as an instance of each template; any remark fails.
  if command -v systemd-analyze >/dev/null; then
    units=$scratch/units
    mkdir -p "$units/leaderrun@check.service.d"
    # The unpacked binary, for systemd-analyze's check that the command exists.
    sed "s#/usr/bin/leaderrun #$root/usr/bin/leaderrun #g" "$root/lib/systemd/system/leaderrun@.service" >"$units/leaderrun@check.service"
    sed "s#/usr/bin/leaderrun #$root/usr/bin/leaderrun #g" "$root/lib/systemd/system/leaderrun-job@.service" >"$units/leaderrun-job@check.service"
    cp "$root/lib/systemd/system/leaderrun-job@.timer" "$units/leaderrun-job@check.timer"
    cp "$root"/usr/share/doc/leaderrun/examples/systemd/*.conf "$units/leaderrun@check.service.d/"
    (cd "$units" && timeout 60 systemd-analyze verify ./leaderrun@check.service ./leaderrun-job@check.service ./leaderrun-job@check.timer) \
      >"$scratch/verify.out" 2>&1 || die "systemd-analyze verify: $(head -n 5 "$scratch/verify.out")"
    [[ ! -s $scratch/verify.out ]] || die "systemd-analyze verify: $(head -n 5 "$scratch/verify.out")"
    # The hardening drop-in keeps the service's exposure low (3.2 of 10 with it, 9.6 without);
    # --offline and --threshold need systemd 252.
    if systemd-analyze --help | grep -q -- '--threshold'; then
      (cd "$units" && timeout 60 systemd-analyze security --offline=true --threshold=40 ./leaderrun@check.service) \
        >"$scratch/security.out" 2>&1 ||
        die "with hardening.conf, systemd-analyze security: $(grep 'Overall exposure' "$scratch/security.out" || tail -n 2 "$scratch/security.out")"
    fi
    how+=", units verified by systemd-analyze"
  fi
  # The container example: the manifest parses and keeps the settings docs/install.md explains.
  if python3 -c 'import yaml' 2>/dev/null; then
    python3 - examples/container/kubernetes.yaml <<'EOF' || die "examples/container/kubernetes.yaml (above)"
import sys, yaml
docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(open(sys.argv[1])) if d}
dep = docs[("Deployment", "my-server")]
c = dep["spec"]["template"]["spec"]["containers"][0]
problems = []
if c["readinessProbe"]["httpGet"]["path"] != "/leader":
    problems.append("the readiness probe is not /leader")
if dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] != "100%":
    problems.append("maxUnavailable is not 100%: a rolling update would wait for readiness for ever")
if not any(e["name"] == "LEADERRUN_STATUS_ADDR" for e in c["env"]):
    problems.append("no LEADERRUN_STATUS_ADDR: nothing answers the probes")
if docs[("Service", "my-server")]["spec"]["selector"] != dep["spec"]["selector"]["matchLabels"]:
    problems.append("the Service does not select the Deployment's pods")
if docs[("Service", "etcd")]["spec"].get("publishNotReadyAddresses") is not True:
    problems.append("etcd's headless Service does not publish not-ready addresses")
if docs[("StatefulSet", "etcd")]["spec"].get("podManagementPolicy") != "Parallel":
    problems.append("etcd's members do not start in parallel")
for p in problems:
    print("kubernetes.yaml:", p, file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
    how+=", container manifest checked"
  fi
  grep -qx 'FROM scratch' examples/container/Dockerfile || die "examples/container/Dockerfile is not FROM scratch"
  for d in target/ .cache/ dist/ .git; do
    grep -qx "$d" examples/container/Dockerfile.dockerignore || die "Dockerfile.dockerignore does not leave out $d"
  done
  say "checked: $(dpkg-deb --show --showformat '${Package} ${Version} ${Architecture}' "$deb"): $how, every file checked"
fi
echo "$deb"
