# shellcheck shell=bash
# Sourced by every script under scripts/ and .ci/: strict mode, `say` and
# `die`, and a message for any failure a script did not explain itself, so
# that no script exits non-zero in silence.
#
# A command substitution or pipeline whose failure is an expected state (a
# cache not there yet, a server not up, a first run) must be written so that
# it cannot fail: test for the state first (`[[ -f ... ]]`), or end it with
# `|| true` where an empty result means "not there". Everything else that
# fails is a real error and ends the script with the message below.
set -Eeuo pipefail

EMBEDFLOW_SCRIPT=$(basename "$0")

say() { printf '%s: %s\n' "$EMBEDFLOW_SCRIPT" "$*" >&2; }

# die WHAT [WHAT_TO_DO]: the failure, and what the user can do about it.
die() {
  printf '%s: error: %s\n' "$EMBEDFLOW_SCRIPT" "$1" >&2
  if [[ -n ${2:-} ]]; then
    printf '%s: what to do: %s\n' "$EMBEDFLOW_SCRIPT" "$2" >&2
  fi
  exit 1
}

# The ERR trap (inherited by functions, -E): the failing command, its exit
# status and where it is. Only the top-level shell reports, so a failure in a
# command substitution is told once, by the line that ran it.
_embedflow_on_err() {
  local rc=$1 line=$2 cmd=$3
  ((BASH_SUBSHELL == 0)) || return 0
  # shellcheck disable=SC2016 # the backquotes are literal
  printf '%s: error: `%s` exited with status %s (%s, line %s)\n' \
    "$EMBEDFLOW_SCRIPT" "$cmd" "$rc" "${BASH_SOURCE[1]:-$0}" "$line" >&2
  printf '%s: what to do: its own output, if any, is above; fix that and run %s again (it is safe to re-run)\n' \
    "$EMBEDFLOW_SCRIPT" "$EMBEDFLOW_SCRIPT" >&2
}
trap '_embedflow_on_err $? $LINENO "$BASH_COMMAND"' ERR

# sha FILE: its sha256, or "missing" when there is no such file (a first run).
sha() {
  if [[ -f $1 ]]; then
    sha256sum "$1" | cut -d' ' -f1
  else
    echo missing
  fi
}
# stamp_key FILE...: size and mtime of each file, or "missing" for an absent
# one: what a .verified stamp records, so a changed file is hashed again.
stamp_key() {
  local f
  for f in "$@"; do
    if [[ -e $f ]]; then
      stat -L -c '%s %Y' "$f"
    else
      echo missing
    fi
  done | tr '\n' ' '
}

# apt_install [--recommends] PACKAGE...: installs Debian packages once per
# machine (as root, or with sudo that asks no password), saying so; no
# service a package ships is started (RUNLEVEL=1). Dies saying what to do.
apt_install() {
  local recommends=--no-install-recommends sudo=()
  if [[ $1 == --recommends ]]; then
    recommends=--install-recommends
    shift
  fi
  [[ $(id -u) == 0 ]] || sudo=(sudo -n)
  say "installing $* from Debian (once per machine)"
  { "${sudo[@]}" apt-get update -q &&
    DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 "${sudo[@]}" apt-get install -y -q "$recommends" "$@"; } >&2 ||
    die "apt-get install $* failed (its message is above)" \
      "install $* with your package manager (root or sudo needed), then run scripts/$EMBEDFLOW_SCRIPT again"
}
