#!/usr/bin/env bash
# Quick start: set up .venv with the test tools, then lint, type-check and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
# The widget's browser tests drive Debian's Chromium (Playwright downloads no browser here).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium for the browser tests..." >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "chromium is missing and cannot be installed here: browser tests will be skipped" >&2
  fi
fi
.venv/bin/ruff check --quiet .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
