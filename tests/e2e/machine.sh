#!/usr/bin/env bash
# The end-to-end test machine: a throwaway Debian 13 (trixie) with systemd as
# PID 1, booted with systemd-nspawn, running rootless Podman 5 (Quadlet) as
# user "dev". The comments beside each setting say why it is there.
#
#   machine.sh up        build or reuse the cached root file systems, boot, provision
#   machine.sh user CMD  run CMD (bash -lc) as dev inside the guest, in dev's home
#   machine.sh root CMD  the same as root
#   machine.sh install   rebuild the devbox wheel and reinstall it in the guest
#   machine.sh diag      failed units, drone units, user journal, podman ps -a
#   machine.sh down      power off, remove the working root (caches stay)
#   machine.sh status    exit 0 when the machine of this state dir is up and ready
#   machine.sh reboot    `systemctl reboot` inside (nspawn exits), boot the same root again, wait for both managers
#
# Environment: DEVBOX_E2E_CACHE (default /var/cache/devbox-e2e; entries are
# keyed by a hash of their inputs, the two most recently used of each kind are
# kept), DEVBOX_E2E_STATE (default /var/tmp/devbox-e2e/run: one machine per
# state dir, so parallel runs each need their own), DEVBOX_E2E_MACHINE (the
# guest's host name: devbox-e2e, or devbox-e2e-<cksum of the state dir> for
# another state dir), DEVBOX_E2E_BOOT_TIMEOUT (s, 180),
# DEVBOX_E2E_KEEP_ON_FAILURE=1 (leave a machine whose `up` failed running, for
# a look inside), PYTHON (host Python >= 3.11 that builds the wheel),
# DEVBOX_E2E_HOST_CA=0 (do not hand this host's extra certificate authorities
# to the guest; see host_cas below).
# Logs: $STATE/up.log (every step's output), $STATE/nspawn.log.
set -euo pipefail

case ${BASH_SOURCE[0]} in */*) SCRIPT_DIR=${BASH_SOURCE[0]%/*} ;; *) SCRIPT_DIR=. ;; esac
SCRIPT_DIR=$(cd "$SCRIPT_DIR" && pwd)
REPO_ROOT=${SCRIPT_DIR%/*/*} # the checkout: two levels above this script
CACHE=${DEVBOX_E2E_CACHE:-/var/cache/devbox-e2e}
STATE=${DEVBOX_E2E_STATE:-/var/tmp/devbox-e2e/run}
# The guest's host name; nspawn also keys /run/systemd/nspawn/propagate/NAME on it.
if [[ $STATE == /var/tmp/devbox-e2e/run ]]; then MACHINE=${DEVBOX_E2E_MACHINE:-devbox-e2e}
else MACHINE=${DEVBOX_E2E_MACHINE:-devbox-e2e-$(printf %s "$STATE" | cksum | cut -d' ' -f1)}; fi
PYTHON=${PYTHON:-python3}
MIRROR=http://deb.debian.org/debian
SUITE=trixie
RECIPE=2 # bump when the way a cached root is made changes
MACHINE_PKGS=systemd,systemd-sysv,dbus,dbus-user-session,libpam-systemd,podman,uidmap,passt,crun,catatonit,fuse-overlayfs,iproute2,procps,sudo,python3,python3-venv,python3-pystemd,curl,git,openssh-client,ca-certificates,nodejs,nftables
BASE_PKGS=git,ca-certificates,curl,openssh-server,sudo,procps,iproute2,nftables
GUEST_PY=3.13
# The Dev Containers CLI: installed with npm on the host (the guest cannot reach the npm registry
# over TLS; the CLI has no dependencies) and copied in; node comes from the guest's nodejs package.
DEVCONTAINER_CLI=@devcontainers/cli@0.89.0
G_DEVCONTAINER_CLI=/opt/devcontainer-cli
# pip matches --platform tags literally (it expands only manylinux2014/2010
# downwards), so name every glibc up to trixie's 2.41: onepassword-sdk ships
# manylinux_2_32 only.
PLATFORMS=(manylinux2014_x86_64)
for ((_i = 17; _i <= 41; _i++)); do PLATFORMS+=("manylinux_2_${_i}_x86_64"); done

# This host's own certificate authorities (a TLS-intercepting egress proxy, as on a corporate network):
# the guest and the drones' base image trust them too, so TLS from the guest and from image builds in
# it (npm in the default image's code-server step, pip) works where the host's does. Test machine only.
HOST_CA_DIR=/usr/local/share/ca-certificates
G_HOST_CA_DIR=/usr/local/share/ca-certificates/devbox-e2e-host

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
BASE_IMAGE=localhost/devbox-base:trixie
TEST_IMAGE=localhost/devbox-test:latest
BOOT_TIMEOUT=${DEVBOX_E2E_BOOT_TIMEOUT:-180}
BASE_JOB=

T0=${EPOCHREALTIME/./}
log() {
  local ds=$(((${EPOCHREALTIME/./} - T0) / 100000))
  printf '[machine %4d.%ds] %s\n' $((ds / 10)) $((ds % 10)) "$*" >&2 || true
}
die() { log "ERROR: $*"; exit 1; }

# retry N CMD...: run CMD up to N times (network steps).
retry() {
  local n=$1 i; shift
  for ((i = 1; i <= n; i++)); do
    if "$@"; then return 0; fi
    ((i < n)) && { log "attempt $i/$n failed, retrying: $(echo "$*" | cut -c1-100)"; sleep $((i * 3)); }
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

# proc_start PID: its starttime (field 22 of /proc/PID/stat) in PSTART; empty
# when it is gone or a zombie. The pair PID + starttime survives PID reuse.
proc_start() {
  PSTART=
  local s
  { read -r s <"/proc/$1/stat"; } 2>/dev/null || return 0
  s=${s##*) }
  local -a f
  read -ra f <<<"$s"
  [[ ${f[0]} == Z || ${f[0]} == X ]] && return 0
  PSTART=${f[19]}
}
load_state() {
  NSPAWN_PID='' NSPAWN_START='' GUEST_PID='' GUEST_START=''
  [[ -r $STATE_FILE ]] || return 1
  local k v
  while IFS='=' read -r k v; do
    case $k in NSPAWN_PID | NSPAWN_START | GUEST_PID | GUEST_START | DEV_UID) printf -v "$k" %s "$v" ;; esac
  done <"$STATE_FILE"
  [[ -n $NSPAWN_PID && -n $GUEST_PID ]]
}

# alive: the machine recorded in the state file still runs.
alive() {
  load_state || return 1
  [[ -n $NSPAWN_START && -n $GUEST_START ]] || return 1
  proc_start "$NSPAWN_PID"; [[ $PSTART == "$NSPAWN_START" ]] || return 1
  proc_start "$GUEST_PID"; [[ $PSTART == "$GUEST_START" ]]
}

# nspawn processes booting our ROOT, even without a state file (crash leftovers).
stray_nspawns() {
  local d cmd
  for d in /proc/[0-9]*; do
    cmd=$(tr '\0' ' ' 2>/dev/null <"$d/cmdline") || continue
    [[ $cmd == *systemd-nspawn*" -D $ROOT "* ]] && echo "${d#/proc/}"
  done
  return 0
}

# Wait until PID is gone, at most $2 seconds.
wait_gone() {
  local pid=$1 start=$2 deadline=$((SECONDS + $3))
  while proc_start "$pid"; [[ -n $PSTART && $PSTART == "$start" ]]; do
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
    env -i -C "/home/$DEV" HOME="/home/$DEV" USER="$DEV" LOGNAME="$DEV" SHELL=/bin/bash PATH="$GUEST_PATH"
    LANG=C.UTF-8 TERM="${TERM:-dumb}" XDG_RUNTIME_DIR="/run/user/$uid"
    DBUS_SESSION_BUS_ADDRESS="unix:path=/run/user/$uid/bus" bash -lc "$1")
}
root_argv() {
  ARGV=(nsenter -t "$GUEST_PID" -a -- env -i -C /root HOME=/root USER=root LOGNAME=root SHELL=/bin/bash
    PATH="$GUEST_PATH" LANG=C.UTF-8 TERM="${TERM:-dumb}" bash -lc "$1")
}
guest_user() { user_argv "$1"; "${ARGV[@]}"; }
guest_root() { root_argv "$1"; "${ARGV[@]}"; }
# tguest user|root SECONDS CMD: the same, bounded (timeout kills its process group).
tguest() { "${1}_argv" "$3"; timeout "$2" "${ARGV[@]}"; }

# ---- caches ---------------------------------------------------------------
# $CACHE/<kind>-<key>/ with a .complete marker; <key> is a short sha256 of
# everything that goes into the entry. Built in <dir>.tmp.PID under
# $CACHE/.lock and renamed into place only on success.

key_of() { printf '%s\n' "$@" | sha256sum | cut -c1-16; }

# cache_build NAME DESCRIPTION BUILDER: make $CACHE/NAME unless it is complete.
cache_build() {
  local final=$CACHE/$1 desc=$2 builder=$3 t d
  if [[ -e $final/.complete ]]; then touch "$final"; return 0; fi # mtime = last use, for prune_cache
  mkdir -p "$CACHE"
  exec 8>"$CACHE/.lock-$1"
  flock -w 3600 8 || die "cache lock $CACHE/.lock-$1 busy for an hour"
  if [[ ! -e $final/.complete ]]; then
    for d in "$final" "$final".tmp.*; do remove_tree "$d"; done # leftovers of a crashed build (we hold the lock)
    local tmp=$final.tmp.$$
    mkdir -p "$tmp"
    log "$desc"
    t=$SECONDS
    "$builder" "$tmp"
    touch "$tmp/.complete"
    mv -T "$tmp" "$final"
    log "  done in $((SECONDS - t)) s: $final ($(du -sh "$final" | cut -f1))"
  fi
  exec 8>&-
  prune_cache "${1%%-*}"
}

# prune_cache KIND: keep the two most recently used entries of KIND (machine,
# base, buildenv, wheels, venv, images, dccli); skip any that someone holds locked.
prune_cache() {
  local d n=0
  # shellcheck disable=SC2045 # our own names: no blanks; newest first
  for d in $(ls -1dt "$CACHE/$1"-*/ 2>/dev/null); do
    d=${d%/}
    [[ $d == *.tmp.* ]] && continue
    n=$((n + 1))
    ((n > 2)) || continue
    log "pruning the old cache entry $d"
    (flock -n 7 || exit 0; remove_tree "$d") 7>"$CACHE/.lock-${d##*/}"
  done
}

# remove_tree DIR: unmount what a killed debootstrap may have left mounted
# below DIR (proc, sys, a bind-mounted /dev), then remove it without leaving
# its file system.
remove_tree() {
  local d=$1 m
  [[ -e $d ]] || return 0
  [[ $d == /*/* ]] || die "refusing to remove $d"
  awk -v d="$d/" 'index($5 "/", d) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
    while read -r m; do umount -l "$m" || true; done
  rm -rf --one-file-system "$d"
}

# kill_tree PID: TERM a process and all its descendants.
kill_tree() {
  local c
  for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do kill_tree "$c"; done
  kill -TERM "$1" 2>/dev/null || true
}

ensure_host_tools() {
  local missing=()
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  [[ -e /usr/share/keyrings/debian-archive-keyring.gpg ]] || missing+=(debian-archive-keyring)
  command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
  command -v newuidmap >/dev/null || missing+=(uidmap)
  if ! "$PYTHON" -c 'import venv, ensurepip, tomllib' 2>/dev/null || ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
    [[ $(command -v "$PYTHON") == /usr/bin/* ]] || die "$PYTHON needs venv, ensurepip, pip and tomllib (Python >= 3.11)"
    missing+=(python3-venv python3-pip)
  fi
  ((${#missing[@]})) || return 0
  log "installing host packages: ${missing[*]}"
  retry 3 run_logged "$UP_LOG" apt-get update || die "apt-get update failed"
  retry 3 run_logged "$UP_LOG" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" ||
    die "cannot install ${missing[*]}"
}

# debootstrap_into DIR PKGS: minbase trixie, 3 attempts, then fail loudly.
debootstrap_into() {
  local dir=$1 pkgs=$2 i
  for i in 1 2 3; do
    remove_tree "$dir"
    if debootstrap --variant=minbase --include="$pkgs" "$SUITE" "$dir" "$MIRROR" >"$dir.log" 2>&1; then
      rm -f "$dir.log"
      return 0
    fi
    log "debootstrap attempt $i/3 failed:"
    tail -n 15 "$dir.log" | sed 's/^/    | /' >&2
    [[ -f $dir/debootstrap/debootstrap.log ]] && tail -n 15 "$dir/debootstrap/debootstrap.log" | sed 's/^/    | /' >&2
    ((i < 3)) && sleep $((i * 5))
  done
  die "debootstrap of $SUITE (--include=$pkgs) failed 3 times"
}

# Documentation, translations and apt lists: nobody reads them here, and every
# `up` copies the root.
trim_tree() {
  local r=$1
  find "$r/usr/share/doc" -xdev -type f ! -name copyright -delete 2>/dev/null || true
  rm -rf "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/usr/share/locale/* \
    "$r"/var/cache/apt/archives/*.deb "$r"/var/cache/apt/*.bin "$r"/var/lib/apt/lists/*
}

build_machine_root() {
  debootstrap_into "$1/root" "$MACHINE_PKGS"
  trim_tree "$1/root"
  rm -f "$1/root/etc/hostname"
}

build_base_tar() {
  debootstrap_into "$1/root" "$BASE_PKGS"
  trim_tree "$1/root"
  trust_host_cas "$1/root"
  # Podman provides hostname and resolv.conf; drones must not share host keys.
  rm -rf "$1"/root/etc/hostname "$1"/root/etc/resolv.conf "$1"/root/etc/ssh/ssh_host_* \
    "$1"/root/dev/* "$1"/root/run/* "$1"/root/tmp/* "$1"/root/debootstrap
  tar --numeric-owner -C "$1/root" -cf "$1/base.tar" .
  rm -rf "$1/root"
}

# host_cas: HOST_CAS, this host's extra CA files (*.crt under HOST_CA_DIR, as update-ca-certificates
# reads them; none with DEVBOX_E2E_HOST_CA=0), and HOST_CA_KEY, a hash of their contents.
host_cas() {
  HOST_CAS=()
  if [[ ${DEVBOX_E2E_HOST_CA:-1} != 0 && -d $HOST_CA_DIR ]]; then
    mapfile -t HOST_CAS < <(find "$HOST_CA_DIR" -name '*.crt' -type f | LC_ALL=C sort)
  fi
  HOST_CA_KEY=none
  ((${#HOST_CAS[@]} == 0)) || HOST_CA_KEY=$(cat "${HOST_CAS[@]}" | sha256sum | cut -c1-16)
}

# trust_host_cas ROOT: add HOST_CAS to the root file system's CA store (its ca-certificates).
trust_host_cas() {
  local r=$1 i=0 f
  ((${#HOST_CAS[@]})) || return 0
  mkdir -p "$r$G_HOST_CA_DIR"
  for f in "${HOST_CAS[@]}"; do
    i=$((i + 1))
    cp "$f" "$r$G_HOST_CA_DIR/$i-${f##*/}"
  done
  chmod -R a+rX "$r$G_HOST_CA_DIR"
  run_logged "$UP_LOG" chroot "$r" update-ca-certificates || die "update-ca-certificates in $r failed"
}

# cache_names: the names of the root file system and image store entries.
cache_names() {
  host_cas
  MACHINE_CACHE=machine-$(key_of "$RECIPE" "$SUITE" minbase "$MACHINE_PKGS")
  BASE_CACHE=base-$(key_of "$RECIPE" "$SUITE" minbase "$BASE_PKGS" "$HOST_CA_KEY")
  local image_hash
  image_hash=$(cd "$SCRIPT_DIR/image" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum)
  IMAGES_CACHE=images-$(key_of "$RECIPE" "$MACHINE_CACHE" "$BASE_CACHE" "$image_hash")
}

# ---- wheels ---------------------------------------------------------------

# A cached venv with the project's build requirements (hatchling), so that
# building the devbox wheel takes a second and no network.
ensure_buildenv() {
  BUILD_REQS=$("$PYTHON" -c 'import sys, tomllib
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["build-system"]["requires"]))' "$REPO_ROOT/pyproject.toml") ||
    die "cannot read [build-system] requires from $REPO_ROOT/pyproject.toml (needs Python >= 3.11 on the host)"
  local name
  name=buildenv-$(key_of "$BUILD_REQS" "$("$PYTHON" -c 'import sys; print(sys.version)')")
  cache_build "$name" "creating the wheel build environment (${BUILD_REQS//$'\n'/ })" build_buildenv
  BUILD_PY=$CACHE/$name/venv/bin/python
}
build_buildenv() {
  "$PYTHON" -m venv "$1/venv"
  local reqs; mapfile -t reqs <<<"$BUILD_REQS"
  retry 3 run_logged "$UP_LOG" "$1/venv/bin/python" -m pip install -q --disable-pip-version-check "${reqs[@]}" ||
    die "cannot install the build requirements: ${reqs[*]}"
}

# make_wheels: the devbox wheel from the checkout (WHEEL) and the cached
# wheels of its runtime dependencies for the guest's Python (DEPS_DIR, DEPS_CACHE).
make_wheels() {
  ensure_buildenv
  local out=$STATE/wheel
  rm -rf "$out"; mkdir -p "$out"
  run_logged "$UP_LOG" "$BUILD_PY" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation \
    -w "$out" "$REPO_ROOT" || die "building the devbox wheel from $REPO_ROOT failed"
  local whl=("$out"/devbox-*.whl)
  [[ -f ${whl[0]} ]] || die "pip wheel made no devbox wheel in $out"
  WHEEL=${whl[0]}
  local reqs
  reqs=$("$PYTHON" - "$WHEEL" <<'EOF'
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
print("\n".join(sorted(l for l in z.read(meta).decode().splitlines() if l.startswith("Requires-Dist:"))))
EOF
  )
  DEPS_CACHE=wheels-$(key_of "$reqs" "$GUEST_PY" "${PLATFORMS[*]}")
  cache_build "$DEPS_CACHE" "downloading the dependency wheels for Python $GUEST_PY" build_deps
  DEPS_DIR=$CACHE/$DEPS_CACHE
}
build_deps() {
  local args=() p
  for p in "${PLATFORMS[@]}"; do args+=(--platform "$p"); done
  retry 3 run_logged "$UP_LOG" "$PYTHON" -m pip download -q --disable-pip-version-check \
    --python-version "$GUEST_PY" --only-binary=:all: "${args[@]}" -d "$1" "$WHEEL" ||
    die "pip download of the dependencies failed"
  rm -f "$1"/devbox-*.whl
}

# ---- the Dev Containers CLI ------------------------------------------------

ensure_devcontainer_cli() {
  CLI_CACHE=dccli-$(key_of "$DEVCONTAINER_CLI")
  cache_build "$CLI_CACHE" "npm install of $DEVCONTAINER_CLI on the host" build_devcontainer_cli
}
build_devcontainer_cli() {
  command -v npm >/dev/null || die "npm is not installed on this host (apt-get install npm): the guest gets $DEVCONTAINER_CLI from here"
  retry 4 run_logged "$UP_LOG" npm install --prefix "$1/cli" --no-audit --no-fund --no-update-notifier "$DEVCONTAINER_CLI" ||
    die "npm install of $DEVCONTAINER_CLI failed 4 times (see $UP_LOG)"
  [[ -x $1/cli/node_modules/.bin/devcontainer ]] || die "npm installed no devcontainer command in $1/cli"
}
put_devcontainer_cli() {
  rm -rf "$ROOT$G_DEVCONTAINER_CLI"
  cp -a "$CACHE/$CLI_CACHE/cli" "$ROOT$G_DEVCONTAINER_CLI"
  ln -sfn "$G_DEVCONTAINER_CLI/node_modules/.bin/devcontainer" "$ROOT/usr/local/bin/devcontainer"
}

# put_wheels: WHEEL and DEPS_DIR into the guest's wheelhouse; DEPS_CHANGED=1 when those changed.
put_wheels() {
  local dst=$ROOT$G_WHEELS
  mkdir -p "$dst"
  DEPS_CHANGED=0
  if [[ $(cat "$dst/.deps" 2>/dev/null) != "$DEPS_CACHE" ]]; then
    cp "$DEPS_DIR"/*.whl "$dst"/
    echo "$DEPS_CACHE" >"$dst/.deps"
    DEPS_CHANGED=1
  fi
  rm -f "$dst"/devbox-*.whl
  cp "$WHEEL" "$dst/"
  WHEEL_NAME=${WHEEL##*/}
}

# ---- up -------------------------------------------------------------------

prepare_root() {
  log "copying the machine root to $ROOT"
  cp -a --reflink=auto "$CACHE/$MACHINE_CACHE/root" "$ROOT"
  echo "$MACHINE" >"$ROOT/etc/hostname"
  if ((${#HOST_CAS[@]})); then
    log "the guest trusts this host's certificate authorities: ${HOST_CAS[*]##*/} (DEVBOX_E2E_HOST_CA=0: not)"
    trust_host_cas "$ROOT"
  fi
  printf 'z /dev/net/tun 0666 root root -\n' >"$ROOT/etc/tmpfiles.d/devbox-e2e-tun.conf"
  # Boot status lines ("[FAILED] Failed to start ...") into the nspawn log.
  mkdir -p "$ROOT/etc/systemd/system.conf.d"
  printf '[Manager]\nShowStatus=yes\n' >"$ROOT/etc/systemd/system.conf.d/devbox-e2e.conf"
  # Nothing in the guest should reach for the network on its own.
  local t
  for t in apt-daily.timer apt-daily-upgrade.timer; do ln -sfn /dev/null "$ROOT/etc/systemd/system/$t"; done

  log "creating user $DEV (linger, subuids, containers.conf, podman.socket)"
  run_logged "$UP_LOG" chroot "$ROOT" useradd -m -u "$DEV_UID" -s /bin/bash "$DEV" || die "useradd failed"
  grep -q "^$DEV:" "$ROOT/etc/subuid" 2>/dev/null || echo "$DEV:100000:65536" >>"$ROOT/etc/subuid"
  grep -q "^$DEV:" "$ROOT/etc/subgid" 2>/dev/null || echo "$DEV:100000:65536" >>"$ROOT/etc/subgid"
  mkdir -p "$ROOT/var/lib/systemd/linger"
  touch "$ROOT/var/lib/systemd/linger/$DEV"
  local h=$ROOT/home/$DEV
  mkdir -p "$h/.config/containers/systemd" "$h/.config/systemd/user/sockets.target.wants" "$h/.local/share/containers"
  cat >"$h/.config/containers/containers.conf" <<'EOF'
# The e2e machine: systemd-nspawn on a host that lacks these (tests/e2e/machine.sh).
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
  cp -r "$SCRIPT_DIR/image" "$h/devbox-e2e-image"
  chown -R "$DEV_UID:$DEV_UID" "$h"

  put_wheels
  put_devcontainer_cli
  VENV_CACHE=venv-$(key_of "$RECIPE" "$MACHINE_CACHE" "$DEPS_CACHE")
  # A cache entry that fails to restore is rebuilt in the guest instead.
  if [[ -e $CACHE/$VENV_CACHE/.complete ]]; then
    log "restoring the cached venv $G_VENV"
    touch "$CACHE/$VENV_CACHE"
    tar -C "$ROOT${G_VENV%/*}" -xf "$CACHE/$VENV_CACHE/venv.tar" 2>>"$UP_LOG" ||
      { log "WARNING: restoring $CACHE/$VENV_CACHE failed"; rm -rf "$ROOT$G_VENV"; }
  fi
  if [[ -e $CACHE/$IMAGES_CACHE/.complete ]]; then
    log "restoring $DEV's cached image store ($BASE_IMAGE, $TEST_IMAGE)"
    touch "$CACHE/$IMAGES_CACHE"
    tar --xattrs --xattrs-include='*' --numeric-owner -C "$h/.local/share/containers" \
      -xpf "$CACHE/$IMAGES_CACHE/storage.tar" 2>>"$UP_LOG" ||
      { log "WARNING: restoring $CACHE/$IMAGES_CACHE failed"; rm -rf "$h/.local/share/containers/storage"; }
  fi
}

# machine_cgroup: CGROUP, this machine's own cgroup (from the state file when there is one).
# nspawn --keep-unit on a host without systemd puts the guest into
# <nspawn's cgroup>/payload: two machines started from the same cgroup would
# share one tree, and each guest's systemd would wait for (and at shutdown
# kill) the other guest's user processes.
machine_cgroup() {
  CGROUP=$(sed -n 's/^CGROUP=//p' "$STATE_FILE" 2>/dev/null || true)
  [[ -n $CGROUP ]] && return 0
  local mnt cg
  mnt=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/self/mounts)
  cg=$(sed -n 's/^0:://p' /proc/self/cgroup)
  [[ -n $mnt && -n $cg ]] || die "no cgroup2 (unified) hierarchy on this host"
  CGROUP=$mnt${cg%/}/devbox-e2e-$(key_of "$STATE")
}

# cleanup_cgroup: once the machine is gone, kill what is left in its cgroup and remove it.
cleanup_cgroup() {
  machine_cgroup
  [[ -d $CGROUP ]] || return 0
  [[ -e $CGROUP/cgroup.kill ]] && { echo 1 >"$CGROUP/cgroup.kill" || true; }
  local deadline=$((SECONDS + 15))
  while grep -q '^populated 1' "$CGROUP/cgroup.events" 2>/dev/null; do
    ((SECONDS < deadline)) || { log "WARNING: processes are left in $CGROUP"; return 0; }
    sleep 0.1
  done
  find "$CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null || true
}

close_fds() {
  local fd
  for fd in "/proc/$BASHPID/fd"/*; do
    fd=${fd##*/}
    ((fd > 2)) && eval "exec $fd>&-"
  done
  return 0
}

boot() {
  log "booting $MACHINE (systemd-nspawn, log $NSPAWN_LOG)"
  : >"$NSPAWN_LOG"
  machine_cgroup
  (
    # Only 0-2 go along: an inherited pipe (ours, or whatever started us) held
    # open by the long-lived nspawn would keep its reader waiting for EOF.
    close_fds
    { mkdir -p "$CGROUP" && echo "$BASHPID" >"$CGROUP/cgroup.procs"; } || { echo "cannot join $CGROUP" >&2; exit 1; }
    TERM=dumb SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 exec setsid systemd-nspawn -D "$ROOT" --register=no --keep-unit \
      --boot --console=passive --machine="$MACHINE"
  ) </dev/null >"$NSPAWN_LOG" 2>&1 &
  local pid=$! deadline=$((SECONDS + 30)) child='' c
  # setsid execs in place (a background job is no process group leader): $! is
  # nspawn. The guest's PID 1 is the child that is PID 1 in its own namespace
  # (nspawn's short-lived helper children are not).
  while :; do
    proc_start "$pid"
    [[ -n $PSTART ]] || die "systemd-nspawn exited at once: $(tail -n 5 "$NSPAWN_LOG")"
    for c in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
      [[ $(awk '$1 == "NSpid:" { print $NF }' "/proc/$c/status" 2>/dev/null) == 1 ]] && child=$c
    done
    [[ -n $child ]] && break
    ((SECONDS < deadline)) || die "no guest PID 1 under systemd-nspawn ($pid) after 30 s"
    sleep 0.05
  done
  NSPAWN_PID=$pid GUEST_PID=$child
  proc_start "$pid"; NSPAWN_START=$PSTART
  proc_start "$child"; GUEST_START=$PSTART
  [[ -n $NSPAWN_START && -n $GUEST_START ]] || die "systemd-nspawn or the guest died at once: $(tail -n 5 "$NSPAWN_LOG")"
  printf '%s\n' "NSPAWN_PID=$NSPAWN_PID" "NSPAWN_START=$NSPAWN_START" "GUEST_PID=$GUEST_PID" \
    "GUEST_START=$GUEST_START" "DEV_UID=$DEV_UID" "ROOT=$ROOT" "MACHINE=$MACHINE" "CGROUP=$CGROUP" >"$STATE_FILE.tmp"
  mv "$STATE_FILE.tmp" "$STATE_FILE"
  log "nspawn PID $NSPAWN_PID, guest PID 1 = host PID $GUEST_PID, cgroup $CGROUP"
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
        tguest "$who" 15 "systemctl $flag --failed --no-pager --no-legend" 2>&1 | sed 's/^/    | /' >&2 || true
        return 0 ;;
    esac
    alive || die "the machine died while booting"
    ((SECONDS < deadline)) || die "the $who manager is not up after $2 s (last state: ${st:-none})"
    sleep 0.2
  done
}

install_venv() {
  local pip="$G_VENV/bin/pip install -q --disable-pip-version-check --no-index --find-links $G_WHEELS"
  local check="ln -sfn $G_VENV/bin/devbox /usr/local/bin/devbox
    $G_VENV/bin/python -c 'import pystemd, devbox'"
  if [[ -e $ROOT$G_VENV/pyvenv.cfg ]]; then
    log "installing $WHEEL_NAME into the cached venv"
    run_logged "$UP_LOG" guest_root "set -e; $pip --force-reinstall --no-deps $G_WHEELS/$WHEEL_NAME; $check" ||
      die "installing devbox in the guest failed"
    return 0
  fi
  log "creating $G_VENV (--system-site-packages) and installing devbox"
  run_logged "$UP_LOG" guest_root "set -e; python3 -m venv --system-site-packages $G_VENV
    $pip $G_WHEELS/$WHEEL_NAME; $check" || die "installing devbox in the guest failed"
  cache_build "$VENV_CACHE" "saving the venv for the next runs" save_venv
}
save_venv() { tar -C "$ROOT${G_VENV%/*}" -cf "$1/venv.tar" "${G_VENV##*/}"; }

# The drones' base tarball is only needed when the image store is not cached:
# then debootstrap it while the machine root is built and booted.
start_base_build() {
  [[ -e $CACHE/$IMAGES_CACHE/.complete || -e $CACHE/$BASE_CACHE/.complete ]] && return 0
  (cache_build "$BASE_CACHE" "building the drones' base root file system tarball (debootstrap, in the background)" \
    build_base_tar) 9>&- </dev/null &
  BASE_JOB=$!
}

install_images() {
  if guest_user "podman image exists $BASE_IMAGE && podman image exists $TEST_IMAGE" >>"$UP_LOG" 2>&1; then
    log "images present: $BASE_IMAGE, $TEST_IMAGE"
    return 0
  fi
  if [[ -n $BASE_JOB ]]; then
    log "waiting for the base tarball (debootstrap in the background)"
    wait "$BASE_JOB" || { BASE_JOB=; die "building the base tarball failed"; }
    BASE_JOB=
  fi
  cache_build "$BASE_CACHE" "building the drones' base root file system tarball (debootstrap)" build_base_tar
  log "podman import $BASE_IMAGE"
  mkdir -p "$ROOT${G_BASE_TAR%/*}"
  cp --reflink=auto "$CACHE/$BASE_CACHE/base.tar" "$ROOT$G_BASE_TAR"
  chmod 0644 "$ROOT$G_BASE_TAR"
  run_logged "$UP_LOG" guest_user "podman image exists $BASE_IMAGE || podman import -q $G_BASE_TAR $BASE_IMAGE" ||
    die "podman import failed"
  rm -f "$ROOT$G_BASE_TAR"
  log "podman build $TEST_IMAGE"
  run_logged "$UP_LOG" guest_user "podman image exists $TEST_IMAGE ||
    podman build -q --pull=never -t $TEST_IMAGE ~/devbox-e2e-image" || die "podman build failed"
  cache_build "$IMAGES_CACHE" "saving $DEV's image store for the next runs" save_images
}
save_images() {
  tar --xattrs --xattrs-include='*' --numeric-owner -C "$ROOT/home/$DEV/.local/share/containers" \
    -cf "$1/storage.tar" storage
}

on_up_exit() {
  local rc=$?
  ((rc)) || return 0
  trap - EXIT
  log "up FAILED (exit $rc)"
  [[ -n $BASE_JOB ]] && kill_tree "$BASE_JOB"
  if alive; then
    echo "---- guest: systemctl --failed" >&2
    tguest root 15 "systemctl --failed --no-pager" >&2 || true
    echo "---- guest: journalctl --user -n 40 (dev)" >&2
    tguest user 15 "journalctl --user -n 40 --no-pager" >&2 || true
  fi
  # The journal files read from the host: also when the guest is dead or its journald is not up.
  if [[ -n $(find "$ROOT/var/log/journal" -name '*.journal' 2>/dev/null | head -n 1) ]]; then
    echo "---- guest journal (read on the host), last 80 lines" >&2
    journalctl -D "$ROOT/var/log/journal" -n 80 --no-pager >&2 || true
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
  trap '' PIPE # a reader that goes away must not kill us half-way
  lock_state
  if alive && [[ -e $READY ]]; then log "already running (guest PID $GUEST_PID)"; return 0; fi
  mkdir -p "$STATE"
  : >"$UP_LOG"
  trap on_up_exit EXIT
  trap 'exit 143' TERM # so that on_up_exit sees a failure and cleans up
  trap 'exit 130' INT
  if alive; then
    log "a machine from $STATE runs but was never ready (an interrupted up?): removing it"
  elif [[ -e $STATE_FILE ]]; then
    log "stale state file (its machine is gone): cleaning up"
  fi
  teardown quiet
  ensure_host_tools
  cache_names
  start_base_build
  cache_build "$MACHINE_CACHE" "building the machine root file system (debootstrap $SUITE)" build_machine_root
  make_wheels
  ensure_devcontainer_cli
  prepare_root
  boot
  wait_state root "$BOOT_TIMEOUT"
  log "system manager running; waiting for $DEV's user manager"
  wait_state user "$BOOT_TIMEOUT"
  install_venv
  install_images
  touch "$READY"
  trap - EXIT TERM INT
  log "up: ready in $SECONDS s (machine.sh user|root CMD; machine.sh down)"
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
    proc_start "$pid"; start=$PSTART
    kill -TERM "$pid" 2>/dev/null || true
    wait_gone "$pid" "$start" 15 || { kill -KILL "$pid" 2>/dev/null || true; wait_gone "$pid" "$start" 15 || true; }
  done
  cleanup_cgroup
  rm -f "$STATE_FILE"
  if [[ -e $ROOT ]]; then
    [[ -n $quiet ]] || log "removing $ROOT"
    remove_tree "$ROOT"
  fi
  rm -rf "$STATE/wheel"
}

cmd_down() {
  trap '' PIPE # a reader that goes away must not kill us half-way
  lock_state
  teardown
  log "down"
}

# ---- reboot ---------------------------------------------------------------

# A guest's reboot makes systemd-nspawn exit (SANDBOX.md): boot the same root again with a new nspawn.
cmd_reboot() {
  trap '' PIPE # a reader that goes away must not kill us half-way
  lock_state
  alive && [[ -e $READY ]] || die "no ready machine running from $STATE (machine.sh up)"
  local t0=$SECONDS
  log "rebooting $MACHINE: systemctl reboot in the guest (PID $GUEST_PID)"
  tguest root 30 "systemctl reboot" >>"$UP_LOG" 2>&1 || true # the guest may take the command down with it
  if ! wait_gone "$NSPAWN_PID" "$NSPAWN_START" 120; then
    log "systemd-nspawn $NSPAWN_PID still runs 120 s after the reboot"
    tail -n 30 "$NSPAWN_LOG" >&2 || true
    die "the guest did not go down"
  fi
  log "the guest went down after $((SECONDS - t0)) s; booting it again"
  cleanup_cgroup
  boot
  wait_state root "$BOOT_TIMEOUT"
  wait_state user "$BOOT_TIMEOUT"
  log "rebooted: both managers up after $((SECONDS - t0)) s (guest PID $GUEST_PID)"
}

# ---- install, diag, status -------------------------------------------------

cmd_install() {
  trap '' PIPE # a reader that goes away must not kill us half-way
  lock_state
  alive || die "no machine running from $STATE (machine.sh up)"
  log "rebuilding the devbox wheel"
  make_wheels
  put_wheels
  local pip="$G_VENV/bin/pip install -q --disable-pip-version-check --no-index --find-links $G_WHEELS"
  if ((DEPS_CHANGED)); then
    log "the dependencies changed: installing them"
    guest_root "$pip $G_WHEELS/$WHEEL_NAME" || die "pip install failed"
  fi
  guest_root "$pip --force-reinstall --no-deps $G_WHEELS/$WHEEL_NAME" || die "pip install failed"
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

usage() { sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2; }

((EUID == 0)) || die "must run as root"
case ${1:-} in
  up) cmd_up ;;
  down) cmd_down ;;
  status)
    if alive && [[ -e $READY ]]; then echo "running (guest PID $GUEST_PID)"
    elif alive; then echo "starting or half-made (guest PID $GUEST_PID)"; exit 1
    else echo "not running"; exit 1; fi ;;
  install) cmd_install ;;
  reboot) cmd_reboot ;;
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
