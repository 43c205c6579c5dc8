#!/usr/bin/env bash
# Fetch Podman's Quadlet generator from a Debian suite without installing Podman: `apt-get
# download` with a private apt state, then `dpkg-deb -x`. The binary links only against libc,
# so it runs on Debian 12. Prints the binary's path. The tests use two: trixie's (Podman 5.4)
# and sid's (5.8 when this was written).
#   tests/tools/get-quadlet.sh [SUITE [DEST_DIR]]   (default: trixie, .cache/quadlet/SUITE in the checkout)
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
suite=${1:-trixie}
dest=${2:-$here/.cache/quadlet/$suite}
if [[ -x $dest/quadlet ]] && "$dest/quadlet" -version >/dev/null 2>&1; then
  echo "$dest/quadlet"; exit 0
fi
mirror=${DEVBOX_DEBIAN_MIRROR:-http://deb.debian.org/debian}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{lists/partial,archives/partial,etc/preferences.d,etc/apt.conf.d} "$dest"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" >"$work/etc/sources.list"
: >"$work/status"
apt_opts=(-o "Dir::Etc=$work/etc" -o "Dir::Etc::sourcelist=$work/etc/sources.list" -o "Dir::Etc::sourceparts=-"
  -o "Dir::State::Lists=$work/lists" -o "Dir::State::status=$work/status" -o "Dir::Cache=$work"
  -o "Dir::Cache::archives=$work/archives" -o "APT::Architecture=amd64" -o "Debug::NoLocking=1"
  -o "Acquire::Retries=3" -o "Acquire::http::Timeout=60")
for attempt in 1 2 3; do
  if apt-get "${apt_opts[@]}" -qq update >&2 && (cd "$work" && apt-get "${apt_opts[@]}" -qq download podman >&2); then
    break
  fi
  [[ $attempt == 3 ]] && { echo "get-quadlet: could not download $suite's podman package from $mirror" >&2; exit 1; }
  echo "get-quadlet: download failed, retrying ($attempt/3)" >&2
  sleep $((attempt * 5))
done
dpkg-deb -x "$work"/podman_*.deb "$work/x"
install -m 0755 "$work/x/usr/libexec/podman/quadlet" "$dest/quadlet"
"$dest/quadlet" -version >&2
echo "$dest/quadlet"
