"""The tiny test model's build: it verifies the behaviour the model tests rely on, or fails saying which shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import DEMO_KNOWLEDGE, REPO
from tests.tiny_model import SHAPES, TinyModelError, build_tiny_model


def test_the_session_model_passed_every_check_with_its_margin(tiny_model_dir: Path) -> None:
    report = json.loads((tiny_model_dir / "checks.json").read_text(encoding="utf-8"))
    assert [s["shape"] for s in report["shapes"]] == [shape.name for shape in SHAPES]
    for shape in report["shapes"]:
        assert shape["passed"] == shape["prompts"] > 0, shape
        assert shape["worst_margin"] >= report["margin"] > 0, shape


def test_a_build_that_cannot_reach_its_margin_fails_naming_every_shape(tmp_path: Path) -> None:
    # No model leads by 1000 logits: the build must stop at its step budget and say what did not pass.
    with pytest.raises(TinyModelError) as failure:
        build_tiny_model(tmp_path / "model", DEMO_KNOWLEDGE, REPO / "prompts", max_steps=100, margin=1000.0)
    message = str(failure.value)
    assert "did not learn every prompt shape in 100 steps, margin 1000.0" in message
    for shape in SHAPES:
        assert f"{shape.name} (0/" in message
    assert not (tmp_path / "model").exists()  # nothing half-built is left to be served
