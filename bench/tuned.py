"""`--tune` for bench/banking77.py: tune the encoder on a run's knowledge (`bot kb tune`) and evaluate with it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import yaml


def tuned_config(bot: Path, config: Path, knowledge: Path, run_dir: Path, threads: int) -> tuple[Path, float]:
    """A copy of `config` whose index.embedding_model is the encoder tuned on `knowledge`, and the seconds
    tuning took (about 0 when `bot kb tune` had it cached)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    command = [str(bot), "kb", "tune", "--config", str(config), "--knowledge", str(knowledge)]
    command += ["--threads", str(threads)]
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    (run_dir / "tune.log").write_text(f"$ {' '.join(command)}\n{proc.stdout}\n{proc.stderr}", encoding="utf-8")
    folder = next(
        (line.split("embedding_model: ", 1)[1] for line in proc.stdout.splitlines() if "embedding_model: " in line),
        None,
    )
    if proc.returncode != 0 or folder is None:
        sys.exit(f"bot kb tune failed (exit {proc.returncode}); see {run_dir / 'tune.log'}\n{proc.stderr[-2000:]}")
    settings = yaml.safe_load(config.read_text(encoding="utf-8"))
    settings["index"]["embedding_model"] = folder.strip()
    tuned = run_dir / "config-tuned.yml"
    tuned.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
    return tuned, seconds
