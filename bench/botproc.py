"""Running the real `bot` command from a benchmark: its environment and indexing the knowledge base."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def bot_env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.pop("BOT_CONFIG", None)
    return env


def index_knowledge(bot: Path, config: Path) -> str:
    """`bot kb index` for the benchmark's config (not measured); exits with its output if it fails."""
    started = time.perf_counter()
    done = subprocess.run(
        [str(bot), "kb", "index", "--config", str(config)],
        env=bot_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        sys.exit(f"`bot kb index` failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return f"{done.stdout.strip()} ({time.perf_counter() - started:.1f}s)"
