"""Where the knowledge index lives: embedded Chroma in a folder (the default, one process), or a Chroma
server (`chroma run`, from the chromadb package) that several bot processes share (`index.server_url`).

Besides the knowledge collection, the index keeps its trained classifier where every process using the
index can read it: a file beside embedded Chroma, or a one-record side collection on the server.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import chromadb
import httpx
import numpy as np
from chromadb.api import ClientAPI
from chromadb.api.models.Collection import Collection
from chromadb.config import Settings
from chromadb.errors import InternalError

from bot.retrieval.embedding import Embedder, KnowledgeEmbeddingFunction
from bot.retrieval.ranking.classifier import ItemClassifier
from bot.storage.unavailable import Unavailable

log = logging.getLogger(__name__)

ENCODER = "encoder"  # collection metadata: the Embedder.identity the vectors came from
_CLASSIFIER = "classifier"
_MAX_NAME = 63  # Chroma's limit for a collection's name
_VARIANT = 16  # hex digits naming a collection of the family for another encoder

T = TypeVar("T")


def _settings() -> Settings:
    """New settings for each client: chromadb's client constructors write the path or the server's address
    into the settings they are given, so one shared object would send a later embedded client to a server."""
    return Settings(anonymized_telemetry=False, allow_reset=False)


class IndexUnavailable(Unavailable):
    """The Chroma server cannot be reached: this process cannot search the knowledge."""


class Shelf(Protocol):
    """Where the trained classifier is kept between runs, for every process that uses the index."""

    def load(self, key: str) -> ItemClassifier | None: ...

    def save(self, classifier: ItemClassifier, key: str) -> None: ...


class FileShelf:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, key: str) -> ItemClassifier | None:
        return ItemClassifier.load(self.path, key)

    def save(self, classifier: ItemClassifier, key: str) -> None:
        classifier.save(self.path, key)


class CollectionShelf:
    """One record in a side collection: its document the classifier's bytes (base64), its metadata the key."""

    def __init__(self, collection: Collection) -> None:
        self._collection = collection

    def load(self, key: str) -> ItemClassifier | None:
        found = self._collection.get(ids=[_CLASSIFIER], include=["documents", "metadatas"])
        if not found["ids"] or not found["documents"] or not found["metadatas"]:
            return None
        if (found["metadatas"][0] or {}).get("key") != key:
            return None
        return ItemClassifier.from_bytes(base64.b64decode(found["documents"][0] or ""), key)

    def save(self, classifier: ItemClassifier, key: str) -> None:
        data = base64.b64encode(classifier.to_bytes(key)).decode("ascii")
        self._collection.upsert(
            ids=[_CLASSIFIER], embeddings=np.zeros((1, 1), np.float32), documents=[data], metadatas=[{"key": key}]
        )


class ChromaHome:
    """A Chroma client, the knowledge collection's name, and where the classifier is kept.

    `family` is the configured collection name; `name` the collection in use, which is another one of the
    family (`family.<hash>`) while the records are served through a tuned encoder.
    """

    def __init__(
        self, client: ClientAPI, name: str, embedder: Embedder, where: str, shared: bool, family: str | None = None
    ) -> None:
        self._client = client
        self._name = name
        self.family = family or name
        self._function = KnowledgeEmbeddingFunction(embedder)
        self.where = where  # the folder, or the server's URL, for messages
        self.shared = shared  # a server other processes use too: one syncs, the others follow
        self.shelf: Shelf = (
            CollectionShelf(
                self.guard(lambda: client.get_or_create_collection(f"{name}.artefacts", embedding_function=None))
            )
            if shared
            else FileShelf(Path(where) / f"{name}.classifier.npz")
        )

    @classmethod
    def embedded(cls, path: Path, name: str, embedder: Embedder) -> ChromaHome:
        path.mkdir(parents=True, exist_ok=True)
        return cls(chromadb.PersistentClient(path=str(path), settings=_settings()), name, embedder, str(path), False)

    @property
    def name(self) -> str:
        return self._name

    def sibling(self, embedder: Embedder) -> ChromaHome:
        """The family's collection for vectors from `embedder`, on the same client."""
        return ChromaHome(self._client, variant(self.family, embedder.identity), embedder, self.where, self.shared,
                          self.family)  # fmt: skip

    def drop_siblings(self, keep: set[str]) -> list[str]:
        """Delete the family's other collections (`family.<hash>`), but `keep`, the one in use and the family's
        own; their names."""
        pattern = re.compile(re.escape(self.family[: _MAX_NAME - _VARIANT - 1]) + rf"\.[0-9a-f]{{{_VARIANT}}}")
        names = [c.name for c in self.guard(self._client.list_collections)]
        dropped = [n for n in names if pattern.fullmatch(n) and n not in keep and n != self._name]
        for name in dropped:
            self.guard(lambda name=name: self._client.delete_collection(name))  # type: ignore[misc]
        return dropped

    @classmethod
    def server(cls, url: str, name: str, embedder: Embedder) -> ChromaHome:
        parts = urlsplit(url)
        secure = parts.scheme == "https"
        port = parts.port or (443 if secure else 8000)
        try:
            host = parts.hostname or "localhost"
            client = chromadb.HttpClient(host=host, port=port, ssl=secure, settings=_settings())
        except (httpx.HTTPError, InternalError, ValueError) as err:  # it checks the server's version at once
            raise IndexUnavailable(f"the Chroma server at {url} cannot be reached: {err}") from err
        return cls(client, name, embedder, url, True)

    def guard(self, call: Callable[[], T]) -> T:
        """`call()`, with a lost server reported as IndexUnavailable (a 503, not a 500)."""
        if not self.shared:
            return call()
        try:
            return call()
        except (httpx.TransportError, InternalError) as err:
            raise IndexUnavailable(f"the Chroma server at {self.where}: {err}") from err

    def collection(self) -> Collection:
        """The knowledge collection, as the server has it now (metadata included)."""
        return self.guard(
            lambda: self._client.get_or_create_collection(
                self._name,
                embedding_function=self._function,  # type: ignore[arg-type]
                configuration={"hnsw": {"space": "cosine"}},
            )
        )

    def open(self, encoder: str) -> Collection:
        """The knowledge collection, emptied first when its vectors came from another encoder."""
        opened = self.collection()
        built_with = (opened.metadata or {}).get(ENCODER)
        if built_with != encoder:
            if opened.count():
                # Vectors from another model or runtime do not compare with this one's: start again.
                log.warning("the index at %s was built with encoder %s, not %s: embedding the knowledge again",
                            self.where, built_with or "(unrecorded)", encoder)  # fmt: skip
                self.guard(lambda: self._client.delete_collection(self._name))
                opened = self.collection()
            self.guard(lambda: opened.modify(metadata={ENCODER: encoder}))
        return opened

    def ping(self) -> float:
        """Round trip to the Chroma server in milliseconds (0.0 embedded); IndexUnavailable if it is down."""
        started = time.perf_counter()
        if self.shared:
            self.guard(self._client.heartbeat)
        return (time.perf_counter() - started) * 1000.0


def variant(family: str, encoder: str) -> str:
    """The name of the family's collection for vectors from the encoder whose identity is `encoder`."""
    digest = hashlib.sha256(f"{family}|{encoder}".encode()).hexdigest()[:_VARIANT]
    return f"{family[: _MAX_NAME - _VARIANT - 1]}.{digest}"


def metadata_of(collection: Collection) -> dict[str, Any]:
    """A collection's own metadata, less what Chroma keeps there itself (a `modify` replaces all of it)."""
    return {k: v for k, v in (collection.metadata or {}).items() if k != "hnsw:space"}
