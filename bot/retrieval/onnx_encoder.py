"""The sentence encoder on ONNX Runtime: exported once from the bundled model, int8 where accuracy holds.

`prepare_onnx` exports a sentence-transformers folder (transformer + mean pooling + normalisation) to
ONNX with torch, optionally quantises its weights to int8 with ONNX Runtime, and keeps the result in a
cache folder under a name derived from the model's files and the recipe, so it is built once per
machine and model, by whichever process first needs it, and never downloaded.

int8 recipe: dynamic quantisation, per-channel weights, reduced range (7-bit weights), with each layer's
feed-forward output projection kept in fp32 (`INT8_KEEP_FP32`). Reduced range
avoids the u8s8 saturation that x86 CPUs without VNNI (AVX2 only, as on many AMD machines) can hit, so
the same model behaves alike on every CPU. Activations are quantised per call from the tensor's own
range, so a text's vector would depend on whatever else shares its batch; `OnnxEncoder` therefore
runs int8 models one text at a time (at 2-3 ms a short query, that costs less than padding did).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Bumped whenever the export or quantisation recipe changes, so older exports are not reused.
RECIPE_VERSION = 1
# MatMuls the int8 recipe leaves in fp32: each layer's feed-forward output projection, whose inputs (after
# GELU) have the widest range. Quantising them too is ~40% faster again but moved answers on near ties in
# the demo cases (docs/BENCHMARKS.md); for all-mpnet-base-v2 it is what breaks plain int8 (cosine 0.72).
INT8_KEEP_FP32 = r"layer\.\d+/output/dense/MatMul$"
# The modules a folder may list, by class name: sentence-transformers 6 records them under new module
# paths (sentence_transformers.base.modules.transformer.Transformer) where older folders have
# sentence_transformers.models.Transformer.
_TRANSFORMER, _POOLING, _NORMALIZE = "Transformer", "Pooling", "Normalize"
_SUPPORTED_MODULES = {_TRANSFORMER, _POOLING, _NORMALIZE}


def _module_kind(type_name: str) -> str:
    """`Transformer` for any sentence-transformers spelling of it; the whole name for anything else."""
    package, _, name = type_name.rpartition(".")
    return name if package.startswith("sentence_transformers") else type_name


class UnsupportedModel(ValueError):
    """The model folder is not one this module can export (the caller falls back to torch)."""


@dataclass(frozen=True)
class ModelLayout:
    """What the sentence-transformers folder says about the model, checked before exporting."""

    transformer: Path  # folder of the Hugging Face model and tokenizer
    max_seq_length: int
    normalise: bool

    @classmethod
    def read(cls, model_path: Path) -> ModelLayout:
        modules_file = model_path / "modules.json"
        if not modules_file.is_file():
            raise UnsupportedModel(f"{model_path}: no modules.json (not a sentence-transformers folder)")
        modules: list[dict[str, Any]] = json.loads(modules_file.read_text())
        kinds = {_module_kind(str(m["type"])): model_path / str(m.get("path", "")) for m in modules}
        unknown = set(kinds) - _SUPPORTED_MODULES
        if unknown or _TRANSFORMER not in kinds:
            raise UnsupportedModel(f"{model_path}: modules {sorted(unknown) or 'without a Transformer'}")
        pooling_dir = kinds.get(_POOLING)
        if pooling_dir is not None:
            pooling = json.loads((pooling_dir / "config.json").read_text())
            # Older folders flag each mode (pooling_mode_mean_tokens: true); sentence-transformers 6 writes
            # pooling_mode: mean.
            modes = {k for k, v in pooling.items() if k.startswith("pooling_mode_") and v is True}
            if isinstance(pooling.get("pooling_mode"), str):
                modes = {f"pooling_mode_{pooling['pooling_mode']}_tokens"}
            if modes != {"pooling_mode_mean_tokens"}:
                raise UnsupportedModel(f"{model_path}: pooling {sorted(modes)}; only mean pooling is exported")
        transformer = kinds[_TRANSFORMER]
        settings_file = transformer / "sentence_bert_config.json"
        settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
        return cls(
            transformer=transformer,
            max_seq_length=int(settings.get("max_seq_length") or 512),
            normalise=_NORMALIZE in kinds,
        )


def model_digest(model_path: Path) -> str:
    """A content hash of the model folder's files (their names and bytes), for cache keys."""
    digest = hashlib.sha256()
    for file in sorted(p for p in model_path.rglob("*") if p.is_file() and p.name != "README.md"):
        digest.update(str(file.relative_to(model_path)).encode())
        with file.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def default_cache_dir() -> Path:
    """Per-user cache shared by every project folder on the machine (exports are keyed by content)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "supportbot" / "encoders"


def prepare_onnx(
    model_path: Path, cache_dir: Path, int8: bool, keep_fp32: str | None = None, digest: str | None = None
) -> Path:
    """The exported model file for `model_path`, building it on first use.

    `digest`: the model's `model_digest`, when the caller already has it.
    `keep_fp32`: a regular expression over MatMul node names left unquantised (for models where plain
    int8 breaks some layers); None quantises every MatMul.
    """
    layout = ModelLayout.read(model_path)
    target, recipe = _export_target(model_path, cache_dir, int8, keep_fp32, digest)
    if target.is_file():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    log.info("preparing the ONNX encoder for %s (%s; once per machine) in %s", model_path, recipe, cache_dir)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".export-") as work:
        fp32 = Path(work) / "model.onnx"
        _export(layout, fp32)
        built = fp32
        if int8:
            built = Path(work) / "model.int8.onnx"
            _quantise(fp32, built, keep_fp32)
        os.replace(built, target)  # atomic: a process starting meanwhile sees no file or the whole file
    log.info("ONNX encoder ready after %.1fs: %s", time.perf_counter() - started, target)
    return target


def export_target(model_path: Path, cache_dir: Path, int8: bool, keep_fp32: str | None, digest: str) -> Path:
    """Where `prepare_onnx` keeps (or would keep) the export of the model whose `model_digest` is `digest`."""
    return _export_target(model_path, cache_dir, int8, keep_fp32, digest)[0]


def _export_target(
    model_path: Path, cache_dir: Path, int8: bool, keep_fp32: str | None, digest: str | None
) -> tuple[Path, str]:
    import onnxruntime

    recipe = f"v{RECIPE_VERSION}-ort{onnxruntime.__version__}-{'int8' if int8 else 'fp32'}-{keep_fp32 or ''}"
    key = hashlib.sha256(f"{digest or model_digest(model_path)}|{recipe}".encode()).hexdigest()[:20]
    return cache_dir / f"encoder-{key}.onnx", recipe


def _export(layout: ModelLayout, out: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(layout.transformer), local_files_only=True)
    model = AutoModel.from_pretrained(str(layout.transformer), local_files_only=True).eval()
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tokenizer.model_input_names]

    class _Hidden(torch.nn.Module):
        """The transformer's last hidden state from positional inputs (pooling runs in numpy)."""

        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            hidden: torch.Tensor = self.inner(**dict(zip(names, inputs, strict=True))).last_hidden_state
            return hidden

    sample = tokenizer(["a short question", "a somewhat longer question about an order"], padding=True)
    args = tuple(torch.tensor(sample[n]) for n in names)
    axes = {n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            _Hidden(model),
            args,
            str(out),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )


def _quantise(fp32: Path, out: Path, keep_fp32: str | None) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded: list[str] = []
    if keep_fp32:
        pattern = re.compile(keep_fp32)
        graph = onnx.load(str(fp32), load_external_data=False).graph
        excluded = [n.name for n in graph.node if n.op_type == "MatMul" and pattern.search(n.name)]
    logging.getLogger().disabled, was = True, logging.getLogger().disabled  # its "consider pre-processing" note
    try:
        quantize_dynamic(
            str(fp32),
            str(out),
            per_channel=True,
            reduce_range=True,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded,
        )
    finally:
        logging.getLogger().disabled = was


class OnnxEncoder:
    """Tokenizer + ONNX Runtime session + mean pooling: texts to (normalised) vectors."""

    def __init__(self, model_path: Path, onnx_file: Path, threads: int, one_at_a_time: bool) -> None:
        import onnxruntime
        from transformers import AutoTokenizer

        layout = ModelLayout.read(model_path)
        self._tokenizer = AutoTokenizer.from_pretrained(str(layout.transformer), local_files_only=True)
        self._max_tokens = min(layout.max_seq_length, int(self._tokenizer.model_max_length or 512))
        self._normalise = layout.normalise
        self._one_at_a_time = one_at_a_time
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3  # errors only
        self._session = onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._session.get_inputs()]
        self.dimension = int(self._session.get_outputs()[0].shape[-1])
        self._lock = threading.Lock()  # the tokenizer is not safe to share between threads

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if self._one_at_a_time:
            return np.concatenate([self._encode_batch([text]) for text in texts]) if texts else self._empty()
        return self._encode_batch(list(texts))

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self.dimension), dtype=np.float32)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            encoded = self._tokenizer(
                texts, padding=True, truncation=True, max_length=self._max_tokens, return_tensors="np"
            )
        feeds = {name: np.asarray(encoded[name], dtype=np.int64) for name in self._inputs}
        hidden = self._session.run(None, feeds)[0]
        mask = feeds["attention_mask"][..., np.newaxis].astype(np.float32)
        vectors = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        if self._normalise:
            vectors /= np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
        result: np.ndarray = vectors.astype(np.float32)
        return result
