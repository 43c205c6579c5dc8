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
# No config: the defaults (the image devbox builds, no tailnet, so SSH on a local port).
"$machine" user "rm -f ~/.config/devbox/config.toml; test -f ~/.ssh/id_ed25519 || ssh-keygen -q -t ed25519 -N '' -f ~/.ssh/id_ed25519"
show "devbox doctor"
show "devbox image build --base localhost/devbox-base:trixie 2>&1 | tail -n 3"
show "devbox create demo --env EDITOR=vim"
show "devbox list"
show "systemctl --user status drone-demo --no-pager --lines 3 | cut -c1-150"
# sshd makes its host key on the drone's first start: wait for it (at most 60 s).
"$machine" user 'for _ in $(seq 120); do devbox ssh demo -- true 2>/dev/null && exit 0; sleep 0.5; done; echo "demo: sshd did not answer" >&2; exit 1'
show "devbox ssh demo -- 'echo \"hello from \$(hostname) as \$(id -un), \$(git --version)\"'"
show "devbox status demo"
show "devbox ssh-config demo"
show "cat ~/.config/containers/systemd/drone-demo.container"
show "devbox stop demo && devbox list"
show "devbox destroy demo --yes"
