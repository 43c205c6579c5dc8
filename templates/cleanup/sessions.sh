# The drone user's tmux sessions, for `devbox sessions` and the idle clean-up's `session` signal
# (run with `podman exec DRONE sh -c "$(cat sessions.sh)" sessions.sh SECONDS`; read by
# devbox/drone/sessions.py). Lines, tab-separated:
#   S  session_id  created  attached_clients  activity  name
#   P  session_id  window_index  pane_pid  window_activity  command
# then "sample", every /proc/PID/stat line, SECONDS of sleep, "sample" and every line again: the CPU
# each session's processes used in between. Nothing but "no-tmux" without tmux, nothing without a server.
command -v tmux >/dev/null 2>&1 || { echo no-tmux; exit 0; }
sessions=$(tmux list-sessions -F 'S	#{session_id}	#{session_created}	#{session_attached}	#{session_activity}	#{session_name}' 2>/dev/null) || exit 0
[ -n "$sessions" ] || exit 0
printf '%s\n' "$sessions"
tmux list-panes -a -F 'P	#{session_id}	#{window_index}	#{pane_pid}	#{window_activity}	#{pane_current_command}' 2>/dev/null
echo sample
cat /proc/[0-9]*/stat 2>/dev/null
sleep "${1:-1}"
echo sample
cat /proc/[0-9]*/stat 2>/dev/null
exit 0
