#!/usr/bin/env bash
# Creates (or refreshes) the virtual environments from the pinned lock files: .venv/ for the bot and
# .venv-actions/ for the rasa-sdk action server.
# Usage: scripts/setup.sh [--dev]
# Re-running is cheap: it reinstalls only when a lock file or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

want_dev=0
[ "${1:-}" = "--dev" ] && want_dev=1

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
