#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: installs what the tests need,
# runs ruff and mypy (any finding fails the run), starts what the tests need
# (the local server is started by the tests; a real single-node Slurm by this
# script), and stops it again by PID.
# Under CI=true, missing parts fail the run instead of skipping tests.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${CI:-}" = "true" ] || [ "$(id -u)" = 0 ]; then
  scripts/setup.sh --ci
else
  scripts/setup.sh
fi

# Lint and type checks first: a finding fails the run (settings in pyproject.toml).
echo "==> ruff check"
.venv/bin/ruff check .
echo "==> mypy"
.venv/bin/mypy

stop_slurm=
if command -v slurmctld >/dev/null && [ "$(id -u)" = 0 ]; then
  export PICAS_SLURM_DIR=${PICAS_SLURM_DIR:-/tmp/picas-slurm-$$}
  if scripts/slurm-cluster.sh start; then
    stop_slurm=1
    eval "$(scripts/slurm-cluster.sh env)"
  else
    # The Slurm tests skip with this reason, or fail with it under CI=true.
    PICAS_SLURM_START_ERROR=$(cat "$PICAS_SLURM_DIR/start-error" 2>/dev/null ||
                              echo "scripts/slurm-cluster.sh start failed")
    export PICAS_SLURM_START_ERROR
  fi
fi
cleanup() { [ -n "$stop_slurm" ] && scripts/slurm-cluster.sh stop || true; }
trap cleanup EXIT

.venv/bin/python -m pytest "$@"
