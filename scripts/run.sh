#!/usr/bin/env bash
# Quick start: set up .venv, index the demo knowledge base and serve the bot on the embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/bot serve "$@"
