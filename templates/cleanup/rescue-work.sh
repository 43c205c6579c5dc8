#!/bin/sh
# devbox idle clean-up: push a stopped drone's unsaved work to rescue branches, without
# changing its working trees. Run in a throwaway container of the drone's image with the
# drone's home volume at $1, its credential socket and git helper mounted as in the drone.
#   rescue-work.sh HOME BRANCH REPO...
# For each repository (relative to HOME) it pushes to its first remote:
#   a commit of the whole working tree (tracked and untracked) on HEAD  -> BRANCH
#   every local branch with commits no remote has                       -> BRANCH-<branch>
#   every stash                                                          -> BRANCH-stash-<n>
# and prints `pushed PATH REMOTE` or `failed PATH MESSAGE`, tab-separated.
home=$1 branch=$2
shift 2
export GIT_AUTHOR_NAME=devbox GIT_AUTHOR_EMAIL=devbox@localhost
export GIT_COMMITTER_NAME=devbox GIT_COMMITTER_EMAIL=devbox@localhost GIT_TERMINAL_PROMPT=0
fail() { printf 'failed\t%s\t%s\n' "$1" "$(printf '%s\n' "$2" | tail -n 1)"; }
for rel in "$@"; do
  repo=$home/$rel
  remote=$(git -C "$repo" remote 2>/dev/null | head -n 1)
  if [ -z "$remote" ]; then fail "$rel" "no remote to push to"; continue; fi
  index=/tmp/devbox-rescue-index.$$
  rm -f "$index"
  parent=
  if git -C "$repo" rev-parse -q --verify HEAD >/dev/null; then
    parent="-p HEAD"
    GIT_INDEX_FILE=$index git -C "$repo" read-tree HEAD
  fi
  tree='' commit=''
  # shellcheck disable=SC2086 # $parent is empty or two words
  if ! GIT_INDEX_FILE=$index git -C "$repo" add -A >/dev/null 2>&1 ||
    ! tree=$(GIT_INDEX_FILE=$index git -C "$repo" write-tree 2>&1) ||
    ! commit=$(git -C "$repo" commit-tree $parent -m "devbox rescue of ~/$rel" "$tree" 2>&1); then
    fail "$rel" "could not snapshot the working tree: ${commit:-$tree}"
    rm -f "$index"
    continue
  fi
  rm -f "$index"
  refs="$commit:refs/heads/$branch"
  for b in $(git -C "$repo" for-each-ref --format='%(refname:short)' refs/heads); do
    if [ -n "$(git -C "$repo" log --oneline -n 1 "refs/heads/$b" --not --remotes)" ]; then
      refs="$refs refs/heads/$b:refs/heads/$branch-$b"
    fi
  done
  n=$(git -C "$repo" stash list | wc -l)
  i=0
  while [ "$i" -lt "$n" ]; do
    refs="$refs stash@{$i}:refs/heads/$branch-stash-$i"
    i=$((i + 1))
  done
  # shellcheck disable=SC2086 # refs are words without spaces (git refuses spaces in ref names)
  if out=$(git -C "$repo" push --quiet "$remote" $refs 2>&1); then
    printf 'pushed\t%s\t%s\n' "$rel" "$remote"
  else
    fail "$rel" "$out"
  fi
done
