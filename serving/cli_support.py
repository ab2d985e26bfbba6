"""What every `bot` command shares: the options, loading the config, logging, and operator errors."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bot.config import Config, ConfigError, load_config
from bot.knowledge.loader import KnowledgeDirMissing
from bot.retrieval.models import ModelNotInstalled
from bot.storage.store import StoreError

if TYPE_CHECKING:
    from bot.retrieval.index import SyncReport
    from serving.runtime import Engine

ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", envvar="BOT_CONFIG", help="Path to config.yml.", dir_okay=False),
]
KnowledgeOption = Annotated[
    Path | None,
    typer.Option("--knowledge", help="Knowledge directory (default: knowledge.path from config).", file_okay=False),
]


def load_settings(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as err:
        typer.echo(f"configuration error:\n{err}", err=True)
        raise typer.Exit(2) from err


def setup_logging(default: str) -> None:
    logging.basicConfig(
        level=os.environ.get("BOT_LOG_LEVEL", default).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@contextlib.contextmanager
def operator_errors() -> Iterator[None]:
    """What an operator fixes in their set-up (a missing folder, a file that is not a store): one line, exit 2."""
    try:
        yield
    except (KnowledgeDirMissing, StoreError, ModelNotInstalled) as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from err


class ProgressPrinter:
    """Prints progress (embedding, by default) at most every two seconds, and at the end."""

    def __init__(self, verb: str = "embedded", unit: str = "texts") -> None:
        self._last = 0.0
        self._verb, self._unit = verb, unit

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - self._last >= 2.0:
            self._last = now
            typer.echo(f"  {self._verb} {done}/{total} {self._unit} ({done * 100 // max(total, 1)}%)", err=True)


def write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def synced_engine(settings: Config, knowledge: Path | None) -> tuple[Engine, SyncReport]:
    """The engine on `knowledge` (in a private index, so the configured one is never touched), synced."""
    from serving.runtime import build_engine, eval_index_path

    index_path = eval_index_path(settings, knowledge) if knowledge is not None else None
    with operator_errors():
        engine = build_engine(settings, knowledge_dir=knowledge, index_path=index_path)
        sync = engine.sync.run(ProgressPrinter())
    for file in sync.rejected:
        for problem in file.problems:
            typer.echo(f"not applied: {problem}", err=True)
    tune_now(engine)
    return engine, sync


def tune_now(engine: Engine) -> None:
    """With `index.tune: auto`, tune the encoder for the knowledge now, as the bot would in the background
    (once per version of the phrasings: cached), so what is measured is what the bot serves."""
    from bot.retrieval.tuning import NothingToTune

    if engine.tuner is None:
        return
    typer.echo("tuning the encoder on the knowledge base's phrasings (index.tune: auto)", err=True)
    try:
        engine.tuner.run_once(ProgressPrinter("trained", "batches"))
    except NothingToTune as err:
        typer.echo(f"encoder not tuned: {err}", err=True)
        return
    typer.echo(f"encoder: {engine.tuner.status.last}", err=True)
