#!/bin/sh
# devbox-drone-init: the drone image's command (image/CONTRACT.md). catatonit (RunInit=yes) is
# PID 1 and runs this as the drone user (UserNS=keep-id). It starts sshd on port 2222 with host
# keys kept in the home volume, Tailscale when an auth key file is mounted, Syncthing when
# DEVBOX_SYNCTHING=1, then waits. SIGTERM stops the children and exits 143 (a clean stop).
set -u
state=${XDG_STATE_HOME:-$HOME/.local/state}/devbox-drone
mkdir -p "$state/ssh" && chmod 700 "$state" "$state/ssh"
pids=''
trap 'kill $pids 2>/dev/null; wait; exit 143' TERM INT

key=$state/ssh/ssh_host_ed25519_key
[ -f "$key" ] || ssh-keygen -q -t ed25519 -N '' -f "$key"
cat >"$state/ssh/sshd_config" <<EOC
Port 2222
HostKey $key
PidFile none
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AllowUsers $(id -un)
EOC
"$(command -v sshd)" -D -e -f "$state/ssh/sshd_config" &
pids="$pids $!"

authkey=${DEVBOX_TAILSCALE_AUTHKEY_FILE:-/run/secrets/tailscale-authkey}
if [ -r "$authkey" ]; then
  sock=$state/tailscaled.sock
  tailscaled --tun=userspace-networking --statedir="$state/tailscale" --socket="$sock" &
  pids="$pids $!"
  (
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      tailscale --socket="$sock" up --auth-key="file:$authkey" --hostname="${DEVBOX_DRONE:-$(hostname)}" \
        ${DEVBOX_TAILSCALE_LOGIN_SERVER:+--login-server="$DEVBOX_TAILSCALE_LOGIN_SERVER"} && exit 0
      sleep 2
    done
    echo "devbox-drone-init: tailscale up failed" >&2
  ) &
fi

if [ "${DEVBOX_SYNCTHING:-0}" = 1 ]; then
  syncthing serve --no-browser --home="$state/syncthing" &
  pids="$pids $!"
fi

echo "devbox-drone-init: ready (sshd on port 2222)"
while :; do
  sleep 3600 &
  wait $!
done
