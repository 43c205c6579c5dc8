#!/usr/bin/env bash
# `make demo`: devbox doing its main job on a machine without systemd and Podman 5.
# Boots the throwaway Debian 13 machine of tests/e2e/machine.sh (systemd 257, rootless
# Podman 5), creates a drone in it as an ordinary user, shows it, and tears it all down.
# Needs root (for systemd-nspawn); the first run builds the machine (a few minutes).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
machine=$here/machine.sh
[[ $(id -u) == 0 ]] || { echo "demo: run as root (systemd-nspawn boots the demo machine)" >&2; exit 1; }
trap '"$machine" down >/dev/null 2>&1 || true' EXIT
"$machine" up
show() { printf '\n\033[1m$ %s\033[0m\n' "$1"; "$machine" user "$1"; }
"$machine" user "mkdir -p ~/.config/devbox && printf '[drone]\nimage = \"localhost/devbox-test:latest\"\n' > ~/.config/devbox/config.toml"
show "devbox doctor"
show "devbox create demo --ssh-port 2201 --env EDITOR=vim"
show "devbox list"
show "systemctl --user status drone-demo --no-pager --lines 3 | cut -c1-150"
show "devbox status demo"
show "cat ~/.config/containers/systemd/drone-demo.container"
show "devbox stop demo && devbox list"
show "devbox destroy demo --yes"
