#!/usr/bin/env bash
# Install everything picas needs into this checkout: a Python venv with
# picas and its test tools (.venv/), and the pinned local server
# (server/node_modules/). Safe to run again: it skips what is in place.
#   scripts/setup.sh          the library, the CLI and the local server
#   scripts/setup.sh --ci     also Debian's chromium and Slurm (needs root)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "error: need root to run: $*" >&2; return 1; fi
}

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || {
    as_root apt-get update -q >/dev/null
    as_root apt-get install -y -q "${missing[@]}" >/dev/null
  }
}

python=${PYTHON:-python3}
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt_install nodejs npm
fi

if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$python" -m venv .venv
fi
stamp=.venv/.picas-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  say "installing picas and its test tools into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[test]"
  touch "$stamp"
fi

if [ ! -f server/node_modules/.package-lock.json ] || \
   [ server/package-lock.json -nt server/node_modules/.package-lock.json ]; then
  say "installing the local server (pouchdb-server, pinned by server/package-lock.json)"
  npm ci --prefix server --no-audit --no-fund --loglevel=error
fi

if [ "${1:-}" = "--ci" ]; then
  apt_install chromium slurmctld slurmd slurm-client munge
fi
say "setup complete"
