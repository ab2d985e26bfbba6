"""One model folder from a base and a LoRA adapter, for servers that take a single plain model
(`transformers serve` on a laptop): peft's `merge_and_unload`, written once per adapter version.

vLLM does not need this: it serves the adapter on top of the base (`--lora-modules`, or loaded at run
time with `bot model load-adapter`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from serving.training.train import plain_base

Say = Callable[[str], None]
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
STAMP = "merged.json"


class AdapterError(ValueError):
    """Not a peft adapter folder, or its base model cannot be found."""


def check_adapter(folder: Path) -> Path:
    """`folder` when it holds a peft adapter; AdapterError naming what is missing otherwise."""
    if not folder.is_dir():
        raise AdapterError(f"{folder}: no such folder (an adapter folder from `bot model train --out`)")
    missing = [name for name in ADAPTER_FILES if not (folder / name).is_file()]
    if missing:
        raise AdapterError(f"{folder}: not a LoRA adapter folder, {' and '.join(missing)} missing")
    return folder


def adapter_base(adapter: Path) -> Path:
    """The base model the adapter was trained on, as its adapter_config.json records it."""
    try:
        recorded = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise AdapterError(f"{adapter / 'adapter_config.json'}: no base_model_name_or_path ({err})") from err
    base = Path(str(recorded))
    if not (base / "config.json").is_file():
        raise AdapterError(f"{adapter}: its base model {base} is not a model folder here; give the base explicitly")
    return base


def file_digest(path: Path) -> str:
    with path.open("rb") as stream:
        return hashlib.file_digest(stream, "sha256").hexdigest()


def servable_base(base: Path, cache: Path, say: Say) -> Path:
    """A plain model folder for `base`: itself, or a GGUF file converted once into `cache`."""
    if base.is_dir():
        return base
    if not base.is_file():
        raise AdapterError(f"{base}: no such model folder or .gguf file")
    return plain_base(base, cache / f"{base.stem}-{file_digest(base)[:12]}", say)


def merged_model(adapter: Path, configured_base: Path | None, cache: Path, say: Say) -> Path:
    """`adapter` merged into its base, in ADAPTER/merged; reused while the adapter's weights are unchanged.

    The base is the one the adapter was trained on (adapter_config.json), else `configured_base`.
    """
    check_adapter(adapter)
    try:
        base = adapter_base(adapter)
    except AdapterError:
        if configured_base is None:
            raise
        base = servable_base(configured_base, cache, say)
    target = adapter / "merged"
    stamp = {"adapter_sha256": file_digest(adapter / "adapter_model.safetensors"), "base": str(base.resolve())}
    try:
        if json.loads((target / STAMP).read_text(encoding="utf-8")) == stamp:
            return target
    except (OSError, ValueError):
        pass
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    say(f"merging {adapter} into {base} for serving (once per adapter version)")
    with tempfile.TemporaryDirectory(dir=adapter, prefix=".merge-") as work:
        staged = Path(work) / "merged"
        model: Any = AutoModelForCausalLM.from_pretrained(str(base))
        merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        merged.save_pretrained(str(staged))
        AutoTokenizer.from_pretrained(str(adapter)).save_pretrained(str(staged))
        (staged / STAMP).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        os.replace(staged, target)
    return target
