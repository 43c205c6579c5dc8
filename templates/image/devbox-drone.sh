# /etc/profile.d/devbox-drone.sh (devbox drone image): login shells reach the tailnet through
# tailscaled's proxy (userspace networking), when devbox-drone-init started Tailscale.
if [ -n "${HOME:-}" ] && [ -r "$HOME/.local/state/devbox-drone/proxy.env" ]; then
  . "$HOME/.local/state/devbox-drone/proxy.env"
fi
# A devcontainer drone's login shells start in its workspace folder (the init writes DEVBOX_WORKSPACE
# to ~/.ssh/environment).
if [ -n "${DEVBOX_WORKSPACE:-}" ] && [ "$PWD" = "${HOME:-}" ] && [ -d "$DEVBOX_WORKSPACE" ]; then
  cd "$DEVBOX_WORKSPACE" || :
fi
