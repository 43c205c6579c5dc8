#!/usr/bin/env bash
# The end-to-end test machine: a throwaway Debian 13 (trixie) with systemd as
# PID 1, booted with systemd-nspawn, running rootless Podman 5 (Quadlet) as
# user "dev". See /work/shared/SANDBOX.md for why each setting is here.
#
#   machine.sh up        build or reuse the cached root file systems, boot, provision
#   machine.sh user CMD  run CMD (bash -lc) as dev inside the guest, in dev's home
#   machine.sh root CMD  the same as root
#   machine.sh install   rebuild the devbox wheel and reinstall it in the guest
#   machine.sh diag      failed units, drone units, user journal, podman ps -a
#   machine.sh down      power off, remove the working root (caches stay)
#   machine.sh status    exit 0 when the machine of this state dir runs
#
# Environment: DEVBOX_E2E_CACHE (default /var/cache/devbox-e2e),
# DEVBOX_E2E_STATE (default /var/tmp/devbox-e2e/run), DEVBOX_E2E_MACHINE
# (machine/host name, default devbox-e2e), DEVBOX_E2E_KEEP_ON_FAILURE=1 (leave
# a machine whose `up` failed running, for a look inside), PYTHON (host python).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
CACHE=${DEVBOX_E2E_CACHE:-/var/cache/devbox-e2e}
STATE=${DEVBOX_E2E_STATE:-/var/tmp/devbox-e2e/run}
MACHINE=${DEVBOX_E2E_MACHINE:-devbox-e2e}
PYTHON=${PYTHON:-python3}
MIRROR=http://deb.debian.org/debian
SUITE=trixie
RECIPE=1 # bump when the way a cached root is made changes
MACHINE_PKGS=systemd,systemd-sysv,dbus,dbus-user-session,libpam-systemd,podman,uidmap,passt,crun,catatonit,fuse-overlayfs,iproute2,procps,sudo,python3,python3-venv,python3-pystemd,curl,git,openssh-client,ca-certificates
BASE_PKGS=git,ca-certificates,curl,openssh-server,sudo,procps,iproute2
GUEST_PY=3.13
# pip matches --platform tags literally (it expands only manylinux2014/2010
# downwards), so name every glibc up to trixie's 2.41: onepassword-sdk ships
# manylinux_2_32 only.
PLATFORMS=(manylinux2014_x86_64)
for _i in $(seq 17 41); do PLATFORMS+=("manylinux_2_${_i}_x86_64"); done

DEV=dev
DEV_UID=1000
ROOT=$STATE/root
STATE_FILE=$STATE/machine.env
READY=$STATE/ready
NSPAWN_LOG=$STATE/nspawn.log
UP_LOG=$STATE/up.log
G_WHEELS=/opt/devbox-wheels
G_VENV=/opt/devbox-venv
G_BASE_TAR=/opt/devbox-e2e/base.tar
G_IMAGE_DIR=/home/$DEV/devbox-e2e-image
BASE_IMAGE=localhost/devbox-base:trixie
TEST_IMAGE=localhost/devbox-test:latest
BOOT_TIMEOUT=${DEVBOX_E2E_BOOT_TIMEOUT:-180}

T0=${EPOCHREALTIME/./}
log() {
  local ds=$(((${EPOCHREALTIME/./} - T0) / 100000))
  printf '[machine %4d.%ds] %s\n' $((ds / 10)) $((ds % 10)) "$*" >&2
}
die() { log "ERROR: $*"; exit 1; }

# retry N CMD...: run CMD up to N times (network steps).
retry() {
  local n=$1 i; shift
  for ((i = 1; i <= n; i++)); do
    if "$@"; then return 0; fi
    ((i < n)) && { log "attempt $i/$n failed: $1 ... retrying"; sleep $((i * 3)); }
  done
  return 1
}

# run_logged FILE CMD...: output into FILE; on failure show its tail.
run_logged() {
  local f=$1; shift
  if "$@" >>"$f" 2>&1; then return 0; fi
  local rc=$?
  log "failed ($rc): $*"; tail -n 40 "$f" | sed 's/^/    | /' >&2
  return $rc
}

# ---- processes and state -------------------------------------------------

# starttime of PID (field 22 of /proc/PID/stat), empty if gone or a zombie.
proc_start() {
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  s=${s##*) }
  set -- $s
  [[ $1 == Z || $1 == X ]] && return 0
  echo "${20}"
}

load_state() {
  NSPAWN_PID= NSPAWN_START= GUEST_PID= GUEST_START=
  [[ -r $STATE_FILE ]] || return 1
  local k v
  while IFS== read -r k v; do
    case $k in NSPAWN_PID | NSPAWN_START | GUEST_PID | GUEST_START | DEV_UID) printf -v "$k" %s "$v" ;; esac
  done <"$STATE_FILE"
  [[ -n $NSPAWN_PID && -n $GUEST_PID ]]
}

# alive: the machine recorded in the state file still runs.
alive() {
  load_state || return 1
  [[ $(proc_start "$NSPAWN_PID") == "$NSPAWN_START" && $(proc_start "$GUEST_PID") == "$GUEST_START" ]]
}

# nspawn processes booting our ROOT, even without a state file (crash leftovers).
stray_nspawns() {
  local d cmd
  for d in /proc/[0-9]*; do
    cmd=$(tr '\0' ' ' <"$d/cmdline" 2>/dev/null) || continue
    [[ $cmd == *systemd-nspawn*" -D $ROOT "* ]] && echo "${d#/proc/}"
  done
  return 0
}

# Wait until PID is gone, at most $2 seconds.
wait_gone() {
  local pid=$1 start=$2 deadline=$((SECONDS + $3))
  while [[ -n $(proc_start "$pid") && $(proc_start "$pid") == "$start" ]]; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

lock_state() {
  mkdir -p "$(dirname "$STATE")"
  exec 9>"$STATE.lock"
  flock -w 1800 9 || die "another machine.sh holds $STATE.lock for 30 min"
}

# ---- running commands in the guest ---------------------------------------

# user_argv CMD / root_argv CMD: set ARGV to run `bash -lc CMD` in the guest
# (in the user's home, with a login-like environment).
GUEST_PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin
user_argv() {
  local uid=${DEV_UID:-1000}
  ARGV=(nsenter -t "$GUEST_PID" -a -- setpriv --reuid="$uid" --regid="$uid" --init-groups --
    env -i -C "/home/$DEV" HOME="/home/$DEV" USER=$DEV LOGNAME=$DEV SHELL=/bin/bash PATH=$GUEST_PATH
    LANG=C.UTF-8 TERM="${TERM:-dumb}" XDG_RUNTIME_DIR="/run/user/$uid"
    DBUS_SESSION_BUS_ADDRESS="unix:path=/run/user/$uid/bus" bash -lc "$1")
}
root_argv() {
  ARGV=(nsenter -t "$GUEST_PID" -a -- env -i -C /root HOME=/root USER=root LOGNAME=root SHELL=/bin/bash
    PATH=$GUEST_PATH LANG=C.UTF-8 TERM="${TERM:-dumb}" bash -lc "$1")
}
guest_user() { user_argv "$1"; "${ARGV[@]}"; }
guest_root() { root_argv "$1"; "${ARGV[@]}"; }
# tguest user|root SECONDS CMD: the same, bounded (timeout kills its process group).
tguest() { "${1}_argv" "$3"; timeout "$2" "${ARGV[@]}"; }

# ---- caches ---------------------------------------------------------------

key_of() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }

ensure_host_tools() {
  local missing=()
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
  command -v newuidmap >/dev/null || missing+=(uidmap)
  ((${#missing[@]})) || return 0
  log "installing host packages: ${missing[*]}"
  mkdir -p "$STATE"
  retry 3 run_logged "$UP_LOG" apt-get update || die "apt-get update failed"
  retry 3 run_logged "$UP_LOG" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" ||
    die "cannot install ${missing[*]}"
}

# debootstrap_into DIR PKGS: minbase trixie, 3 attempts.
debootstrap_into() {
  local dir=$1 pkgs=$2 i
  for i in 1 2 3; do
    rm -rf "$dir"
    if debootstrap --variant=minbase --include="$pkgs" "$SUITE" "$dir" "$MIRROR" >"$dir.log" 2>&1; then
      return 0
    fi
    log "debootstrap attempt $i/3 failed:"
    tail -n 15 "$dir.log" | sed 's/^/    | /' >&2
    [[ -f $dir/debootstrap/debootstrap.log ]] && tail -n 15 "$dir/debootstrap/debootstrap.log" | sed 's/^/    | /' >&2
    ((i < 3)) && sleep $((i * 5))
  done
  die "debootstrap of $SUITE ($pkgs) failed 3 times"
}

# cached NAME KEY BUILDER: make $CACHE/KEY by running BUILDER TMPDIR, renamed into place on success.
cached() {
  local name=$1 key=$2 builder=$3 final=$CACHE/$2
  if [[ -e $final/.complete ]]; then log "$name: cached ($final)"; return 0; fi
  mkdir -p "$CACHE"
  exec 8>"$CACHE/.lock"
  flock -w 3600 8 || die "cache lock $CACHE/.lock busy for an hour"
  if [[ ! -e $final/.complete ]]; then
    rm -rf "$final" "$CACHE/$key".tmp.* # leftovers of a crashed build (we hold the lock)
    local tmp=$CACHE/$key.tmp.$$
    mkdir -p "$tmp"
    log "$name: building ($SUITE minbase, debootstrap)"
    "$builder" "$tmp"
    touch "$tmp/.complete"
    mv -T "$tmp" "$final"
    log "$name: built ($(du -sh "$final" | cut -f1))"
  else
    log "$name: cached ($final)"
  fi
  exec 8>&-
}

build_machine_root() {
  debootstrap_into "$1/root" "$MACHINE_PKGS"
  rm -f "$1/root.log" "$1/root/etc/hostname"
  rm -rf "$1"/root/var/cache/apt/archives/*.deb
}

build_base_tar() {
  debootstrap_into "$1/root" "$BASE_PKGS"
  rm -f "$1/root.log"
  # Image hygiene: podman provides these; every drone must not share host keys.
  rm -rf "$1"/root/etc/hostname "$1"/root/etc/resolv.conf "$1"/root/etc/ssh/ssh_host_* \
    "$1"/root/var/cache/apt/archives/*.deb "$1"/root/var/lib/apt/lists/* "$1"/root/dev/* \
    "$1"/root/run/* "$1"/root/tmp/* "$1"/root/debootstrap
  tar --numeric-owner -C "$1/root" -cf "$1/base.tar" .
  rm -rf "$1/root"
}

MACHINE_KEY=$(key_of "$RECIPE" "$SUITE" minbase "$MACHINE_PKGS")
BASE_KEY=$(key_of "$RECIPE" "$SUITE" minbase base-tar "$BASE_PKGS")

# ---- wheels ---------------------------------------------------------------

# build_devbox_wheel OUTDIR: prints the wheel path.
build_devbox_wheel() {
  local out=$1
  rm -rf "$out"; mkdir -p "$out"
  retry 3 run_logged "$UP_LOG" "$PYTHON" -m pip wheel --disable-pip-version-check --no-deps -w "$out" "$REPO_ROOT" ||
    die "pip wheel of $REPO_ROOT failed"
  local whl=("$out"/devbox-*.whl)
  [[ -f ${whl[0]} ]] || die "pip wheel made no devbox wheel in $out"
  echo "${whl[0]}"
}

# deps_dir WHEEL: the cached wheelhouse of WHEEL's runtime dependencies.
deps_dir() {
  local whl=$1 reqs key
  reqs=$("$PYTHON" - "$whl" <<'EOF'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
print("\n".join(sorted(l for l in z.read(meta).decode().splitlines() if l.startswith("Requires-Dist:"))))
EOF
  )
  key=$(key_of "$reqs" "$GUEST_PY" "${PLATFORMS[*]}")
  DEPS_KEY=wheels-$key
  cached_deps "$CACHE/wheels-$key" "$whl"
  echo "$CACHE/wheels-$key"
}

cached_deps() {
  local final=$1 whl=$2
  [[ -e $final/.complete ]] && return 0
  mkdir -p "$CACHE"
  local tmp=$final.tmp.$$ args=() p
  for p in "${PLATFORMS[@]}"; do args+=(--platform "$p"); done
  rm -rf "$tmp"; mkdir -p "$tmp"
  log "downloading runtime dependency wheels for Python $GUEST_PY"
  retry 3 run_logged "$UP_LOG" "$PYTHON" -m pip download --disable-pip-version-check \
    --python-version "$GUEST_PY" --only-binary=:all: "${args[@]}" -d "$tmp" "$whl" ||
    die "pip download of the dependencies failed"
  rm -f "$tmp"/devbox-*.whl
  touch "$tmp/.complete"
  rm -rf "$final"; mv -T "$tmp" "$final"
}

# put_wheels: devbox wheel + dependencies into ROOT/opt/devbox-wheels; sets WHEEL_NAME, DEPS_CHANGED.
put_wheels() {
  local whl deps dst=$ROOT$G_WHEELS
  whl=$(build_devbox_wheel "$STATE/wheel")
  deps=$(deps_dir "$whl")
  mkdir -p "$dst"
  DEPS_CHANGED=0
  if [[ $(cat "$dst/.deps" 2>/dev/null) != "$deps" ]]; then
    cp "$deps"/*.whl "$dst"/
    echo "$deps" >"$dst/.deps"
    DEPS_CHANGED=1
  fi
  rm -f "$dst"/devbox-*.whl
  cp "$whl" "$dst/"
  WHEEL_NAME=$(basename "$whl")
}

# ---- up -------------------------------------------------------------------

prepare_root() {
  local m=$CACHE/$MACHINE_KEY/root b=$CACHE/$BASE_KEY/base.tar
  log "copying the machine root to $ROOT"
  cp -a --reflink=auto "$m" "$ROOT"
  echo "$MACHINE" >"$ROOT/etc/hostname"
  printf 'z /dev/net/tun 0666 root root -\n' >"$ROOT/etc/tmpfiles.d/devbox-e2e-tun.conf"
  # Nothing in the guest should reach for the network on its own.
  local t
  for t in apt-daily.timer apt-daily-upgrade.timer; do ln -sfn /dev/null "$ROOT/etc/systemd/system/$t"; done

  log "creating user $DEV (linger, subuids, containers.conf, podman.socket)"
  chroot "$ROOT" useradd -m -u "$DEV_UID" -s /bin/bash "$DEV" >>"$UP_LOG" 2>&1
  grep -q "^$DEV:" "$ROOT/etc/subuid" 2>/dev/null || echo "$DEV:100000:65536" >>"$ROOT/etc/subuid"
  grep -q "^$DEV:" "$ROOT/etc/subgid" 2>/dev/null || echo "$DEV:100000:65536" >>"$ROOT/etc/subgid"
  mkdir -p "$ROOT/var/lib/systemd/linger"
  touch "$ROOT/var/lib/systemd/linger/$DEV"
  local h=$ROOT/home/$DEV
  mkdir -p "$h/.config/containers/systemd" "$h/.config/systemd/user/sockets.target.wants"
  cat >"$h/.config/containers/containers.conf" <<'EOF'
# The e2e machine (systemd-nspawn on a host without those features), see SANDBOX.md.
[containers]
# /proc/sys is read-only: setting net.ipv4.ping_group_range fails
default_sysctls = []
# keyctl is blocked: "create keyring: Operation not permitted"
keyring = false
# no pids controller: "controller `pids` is not available"
pids_limit = 0
EOF
  # Otherwise every Quadlet start waits 90 s for network-online.
  ln -sfn /dev/null "$h/.config/systemd/user/podman-user-wait-network-online.service"
  ln -sfn /usr/lib/systemd/user/podman.socket "$h/.config/systemd/user/sockets.target.wants/podman.socket"
  rm -rf "$h/devbox-e2e-image"
  cp -r "$SCRIPT_DIR/image" "$h/devbox-e2e-image"
  chown -R "$DEV_UID:$DEV_UID" "$h"
  mkdir -p "$ROOT${G_BASE_TAR%/*}"
  cp --reflink=auto "$b" "$ROOT$G_BASE_TAR"
  chmod 0644 "$ROOT$G_BASE_TAR"
}

boot() {
  log "booting $MACHINE (systemd-nspawn, log $NSPAWN_LOG)"
  : >"$NSPAWN_LOG"
  SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 setsid systemd-nspawn -D "$ROOT" --register=no --keep-unit \
    --boot --console=passive --machine="$MACHINE" </dev/null >"$NSPAWN_LOG" 2>&1 8>&- 9>&- &
  local pid=$! deadline=$((SECONDS + 30)) child= c
  # setsid execs in place (a background job is no process group leader).
  while [[ -z $child ]]; do
    [[ -n $(proc_start "$pid") ]] || die "systemd-nspawn exited at once"
    for c in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
      if [[ $(readlink "/proc/$c/ns/pid") != $(readlink /proc/self/ns/pid) ]]; then child=$c; fi
    done
    [[ -n $child ]] && break
    ((SECONDS < deadline)) || die "no guest PID 1 under systemd-nspawn ($pid) after 30 s"
    sleep 0.05
  done
  NSPAWN_PID=$pid GUEST_PID=$child
  NSPAWN_START=$(proc_start "$pid") GUEST_START=$(proc_start "$child")
  printf '%s\n' "NSPAWN_PID=$NSPAWN_PID" "NSPAWN_START=$NSPAWN_START" "GUEST_PID=$GUEST_PID" \
    "GUEST_START=$GUEST_START" "DEV_UID=$DEV_UID" "ROOT=$ROOT" "MACHINE=$MACHINE" >"$STATE_FILE.tmp"
  mv "$STATE_FILE.tmp" "$STATE_FILE"
  log "nspawn PID $NSPAWN_PID, guest PID 1 = host PID $GUEST_PID"
}

# wait_state WHO TIMEOUT: until `systemctl [--user] is-system-running --wait` says running/degraded.
wait_state() {
  local who=$1 deadline=$((SECONDS + $2)) st flag=
  [[ $who == user ]] && flag=--user
  while :; do
    st=$(tguest "$who" 15 "systemctl $flag is-system-running --wait" 2>/dev/null) || true
    case $st in
      running) return 0 ;;
      degraded)
        log "WARNING: the $who manager is degraded; failed units:"
        tguest "$who" 15 "systemctl $flag --failed --no-pager --no-legend" | sed 's/^/    | /' >&2 || true
        return 0 ;;
    esac
    alive || die "the machine died while booting"
    ((SECONDS < deadline)) || die "the $who manager is not up after $2 s (last state: ${st:-none})"
    sleep 0.2
  done
}

on_up_exit() {
  local rc=$?
  ((rc)) || return 0
  trap - EXIT
  log "up FAILED (exit $rc)"
  if alive; then
    echo "---- guest: systemctl --failed" >&2
    tguest root 15 "systemctl --failed --no-pager" >&2 || true
    echo "---- guest: journalctl -n 80" >&2
    tguest root 15 "journalctl -n 80 --no-pager" >&2 || true
    echo "---- guest: journalctl --user -n 40 (dev)" >&2
    tguest user 15 "journalctl --user -n 40 --no-pager" >&2 || true
  fi
  if [[ -s $NSPAWN_LOG ]]; then echo "---- $NSPAWN_LOG (tail)" >&2; tail -n 40 "$NSPAWN_LOG" >&2; fi
  if [[ ${DEVBOX_E2E_KEEP_ON_FAILURE:-0} == 1 ]]; then
    log "DEVBOX_E2E_KEEP_ON_FAILURE=1: leaving the machine as it is"
  else
    teardown
  fi
  exit "$rc"
}

cmd_up() {
  lock_state
  if alive && [[ -e $READY ]]; then log "already running (guest PID $GUEST_PID)"; return 0; fi
  mkdir -p "$STATE"
  : >"$UP_LOG"
  trap on_up_exit EXIT
  teardown quiet # a crashed or half-done machine of this state dir
  ensure_host_tools
  cached "machine root" "$MACHINE_KEY" build_machine_root
  cached "base image tarball" "$BASE_KEY" build_base_tar
  prepare_root
  log "building the wheelhouse (devbox wheel + dependencies for Python $GUEST_PY)"
  put_wheels
  boot
  wait_state root "$BOOT_TIMEOUT"
  log "system manager up; waiting for $DEV's user manager"
  wait_state user "$BOOT_TIMEOUT"
  log "installing devbox into $G_VENV"
  run_logged "$UP_LOG" guest_root "set -e
    python3 -m venv --system-site-packages $G_VENV
    $G_VENV/bin/pip install -q --disable-pip-version-check --no-index --find-links $G_WHEELS devbox
    ln -sfn $G_VENV/bin/devbox /usr/local/bin/devbox
    $G_VENV/bin/python -c 'import pystemd, devbox'" || die "installing devbox in the guest failed"
  log "importing $BASE_IMAGE"
  run_logged "$UP_LOG" guest_user "podman image exists $BASE_IMAGE || podman import -q $G_BASE_TAR $BASE_IMAGE" ||
    die "podman import failed"
  rm -f "$ROOT$G_BASE_TAR"
  log "building $TEST_IMAGE"
  run_logged "$UP_LOG" guest_user "podman image exists $TEST_IMAGE || podman build -q --pull=never -t $TEST_IMAGE $G_IMAGE_DIR" ||
    die "podman build failed"
  touch "$READY"
  trap - EXIT
  log "up: ready (guest PID $GUEST_PID; machine.sh user|root CMD)"
}

# ---- down -----------------------------------------------------------------

# teardown [quiet]: stop whatever runs from ROOT, remove ROOT.
teardown() {
  local quiet=${1:-} pid start
  rm -f "$READY"
  if alive; then
    [[ -n $quiet ]] || log "powering off $MACHINE (guest PID $GUEST_PID)"
    kill -s SIGRTMIN+4 "$GUEST_PID" 2>/dev/null || true
    if ! wait_gone "$NSPAWN_PID" "$NSPAWN_START" 60; then
      log "no clean power-off after 60 s: SIGTERM to systemd-nspawn"
      kill -TERM "$NSPAWN_PID" 2>/dev/null || true
      if ! wait_gone "$NSPAWN_PID" "$NSPAWN_START" 15; then
        log "SIGKILL to the guest and systemd-nspawn"
        kill -KILL "$GUEST_PID" "$NSPAWN_PID" 2>/dev/null || true
        wait_gone "$NSPAWN_PID" "$NSPAWN_START" 15 || die "systemd-nspawn $NSPAWN_PID does not die"
      fi
    fi
  fi
  for pid in $(stray_nspawns); do
    log "killing a stray systemd-nspawn $pid on $ROOT"
    start=$(proc_start "$pid")
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid" "$start" 15 || { kill -KILL "$pid" 2>/dev/null || true; wait_gone "$pid" "$start" 15 || true; }
  done
  rm -f "$STATE_FILE"
  if [[ -e $ROOT ]]; then
    [[ $ROOT == /*/* && $ROOT != / ]] || die "refusing to remove $ROOT"
    if grep -q " $ROOT[/ ]" /proc/self/mountinfo; then
      die "something is still mounted under $ROOT on the host; not removing it"
    fi
    [[ -n $quiet ]] || log "removing $ROOT"
    rm -rf --one-file-system "$ROOT"
  fi
  rm -rf "$STATE/wheel"
}

cmd_down() {
  lock_state
  teardown
  log "down"
}

# ---- install, diag, status -------------------------------------------------

cmd_install() {
  lock_state
  alive || die "no machine running from $STATE (machine.sh up)"
  log "rebuilding the devbox wheel"
  put_wheels
  local w=$G_WHEELS/$WHEEL_NAME pip="$G_VENV/bin/pip install -q --disable-pip-version-check --no-index --find-links $G_WHEELS"
  if ((DEPS_CHANGED)); then
    log "dependencies changed: installing them"
    guest_root "$pip $w" || die "pip install failed"
  fi
  guest_root "$pip --force-reinstall --no-deps $w" || die "pip install failed"
  log "installed $WHEEL_NAME"
}

cmd_diag() {
  alive || { echo "machine.sh diag: no machine running from $STATE"; return 0; }
  local -a parts=(
    "root|systemctl --failed --no-pager"
    "user|systemctl --user --failed --no-pager"
    "user|systemctl --user list-units --all --no-pager 'drone-*'"
    "user|journalctl --user -n 50 --no-pager"
    "user|podman ps -a"
  )
  local p
  for p in "${parts[@]}"; do
    echo "---- ${p%%|*}: ${p#*|}"
    tguest "${p%%|*}" 30 "${p#*|}" 2>&1 </dev/null || echo "(exit $?)"
  done
}

usage() { sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }

[[ $(id -u) == 0 ]] || die "must run as root"
case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status) alive ;;
  install) cmd_install ;;
  diag) cmd_diag ;;
  user | root)
    who=$1; shift
    (($#)) || die "usage: machine.sh $who CMD"
    alive || die "no machine running from $STATE (machine.sh up)"
    "${who}_argv" "$*"
    exec "${ARGV[@]}"
    ;;
  *) usage ;;
esac
