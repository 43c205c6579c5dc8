#!/bin/sh
# devbox idle clean-up: the state of every git repository in a stopped drone's home.
# Run by devbox in a throwaway container of the drone's image, home volume mounted at $1.
# One line per repository, tab-separated:
#   repo  PATH  CHANGES  STASHES  UNPUSHED  HAS_REMOTE     or     error  PATH  MESSAGE
# Read-only: --no-optional-locks keeps `git status` from rewriting the index.
cd "$1" || exit 3
find . -maxdepth 5 \( -name .cache -o -name node_modules \) -prune -o -name .git -prune -print 2>/dev/null |
  while IFS= read -r git; do
    repo=${git%/.git}
    rel=${repo#./}
    if ! status=$(git -C "$repo" --no-optional-locks status --porcelain 2>&1); then
      printf 'error\t%s\t%s\n' "$rel" "$(printf '%s\n' "$status" | head -n 1)"
      continue
    fi
    changes=$(printf '%s' "$status" | grep -c .)
    stashes=$(git -C "$repo" stash list 2>/dev/null | wc -l)
    unpushed=$(git -C "$repo" log --branches --not --remotes --oneline 2>/dev/null | wc -l)
    remote=0
    [ -n "$(git -C "$repo" remote 2>/dev/null)" ] && remote=1
    printf 'repo\t%s\t%s\t%s\t%s\t%s\n' "$rel" "$changes" "$stashes" "$unpushed" "$remote"
  done
