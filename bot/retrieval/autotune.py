"""The encoder tuned on the knowledge base by the bot itself (`index.tune: auto`).

After each change of the knowledge base, a background thread tunes the configured encoder on the
phrasings now served (`bot.retrieval.tuning`: cached by their content, so an edit that changes only
answers costs a hash and nothing more), exports the result, and has the index switch to it
(`KnowledgeIndex.adopt`), while the encoder in use goes on serving: edits keep applying within the
usual seconds throughout. An edit made while tuning runs is tuned for next, once that one is done.
Which tuned encoder serves is kept in a small file beside the index, so a restart serves it at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from bot.retrieval.embedding import Embedder, Progress
from bot.retrieval.index import KnowledgeIndex
from bot.retrieval.onnx_encoder import model_digest
from bot.retrieval.ranking.calibration import Cancelled
from bot.retrieval.tuning import NothingToTune, TuningCancelled, prune, tune, used

log = logging.getLogger(__name__)

NICER = 10  # the tuning thread's niceness above the process's
KEEP_TUNED = 3  # tuned encoders kept in the cache: the one serving and the two used before it


@dataclass(frozen=True)
class TuningStatus:
    """For /health: what the tuner is doing, the encoder it last switched to, what the last attempt did."""

    state: str  # "idle", "tuning" (training), or "switching" (re-embedding the knowledge with the result)
    batches: tuple[int, int]  # training batches done and in all, of the tuning under way or the last one
    switches: int  # switches to a newly tuned encoder since start-up
    last: str  # what the last attempt ended with ("" before the first)
    last_at: float | None  # when (Unix time)


def _pointer(index_path: Path, collection: str) -> Path:
    return index_path / f"{collection}.encoder.json"


def active_encoder(index_path: Path, collection: str, base: Path) -> Path | None:
    """The tuned encoder the index at `index_path` last switched to, if it was tuned from `base` and is
    still there (a cleared cache, or another base model, means starting from `base` again)."""
    try:
        recorded = json.loads(_pointer(index_path, collection).read_text(encoding="utf-8"))
        model, tuned_from = Path(recorded["model"]), recorded["base"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if tuned_from != str(base) or not (model / "modules.json").is_file():
        return None
    used(model)
    return model


def record_active(index_path: Path, collection: str, base: Path, model: Path) -> None:
    pointer = _pointer(index_path, collection)
    partial = pointer.with_suffix(".partial")
    partial.write_text(json.dumps({"model": str(model), "base": str(base)}), encoding="utf-8")
    os.replace(partial, pointer)  # whole or absent


class EncoderTuner:
    """Tunes `base` (called `name`) on the index's phrasings, in the background after each `request()`
    or at once (`run_once`), and switches the index to the result."""

    def __init__(
        self,
        index: KnowledgeIndex,
        base: Path,
        name: str,
        cache_dir: Path,
        embedder_for: Callable[[Path], Embedder],
        record: Callable[[Path], None],
        threads: int = 1,
    ) -> None:
        """`embedder_for`: an encoder like the one in use, of another model folder; `record`: keeps which
        folder serves, for the next start (`record_active`)."""
        self._index = index
        self._base = base
        self._name = name
        self._cache_dir = cache_dir
        self._embedder_for = embedder_for
        self._record = record
        self._threads = threads
        self._base_digest: str | None = None
        self._lock = threading.Lock()  # `_wanted` and `_thread` together
        self._wanted = False
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._status = TuningStatus("idle", (0, 0), 0, "", None)

    @property
    def status(self) -> TuningStatus:
        return self._status

    def request(self) -> None:
        """Tune for the phrasings served now, in the background (after the tuning under way, if one is)."""
        with self._lock:
            self._wanted = True
            if self._thread is None and not self._closing.is_set():
                # Not a daemon: the interpreter would stop torch mid-step at exit. `close` stops it.
                self._thread = threading.Thread(target=self._work, name="encoder-tuning")
                self._thread.start()

    def close(self) -> None:
        """Stop tuning or switching (at the next batch; nothing half-done is kept) and wait for it."""
        self._closing.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join()

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._wanted or self._closing.is_set():
                    self._thread = None
                    return
                self._wanted = False
            try:
                self.run_once()
            except (TuningCancelled, Cancelled):
                self._finish("stopped: the service is stopping")
            except NothingToTune as err:
                self._finish(f"nothing to tune: {err}")
            except Exception as err:  # the encoder in use goes on serving; the next edit tries again
                log.exception("tuning the encoder failed; the encoder in use stays")
                self._finish(f"failed: {err}")

    def run_once(self, progress: Progress | None = None) -> bool:
        """Tune for the phrasings served now and switch the index to the result (False: it serves already).
        `progress` hears of training batches. Raises TuningCancelled or Cancelled once `close` is called."""
        items = {item: texts for item, texts in self._index.items().items() if texts}
        self._status = replace(self._status, state="tuning", batches=(0, 0))
        if self._base_digest is None:
            self._base_digest = model_digest(self._base)

        def trained(done: int, total: int) -> None:
            self._status = replace(self._status, batches=(done, total))
            if progress is not None:
                progress(done, total)

        # Training on a thread of its own, below the ones that answer: on a busy machine customers' messages
        # come first and tuning takes longer. The thread ends with the training, and its niceness with it
        # (going back up would need a privilege), so what the switch starts runs at the usual priority.
        with ThreadPoolExecutor(1, thread_name_prefix="encoder-training", initializer=_nicer) as training:
            result = training.submit(tune, self._base, self._name, items, self._cache_dir, self._threads, trained,
                                     self._closing.is_set, base_digest=self._base_digest).result()  # fmt: skip
        if result.model == self._index.embedder.model_path:
            self._finish(f"already serving the encoder tuned for these phrasings ({result.model.name})")
            return False
        started = time.perf_counter()
        self._status = replace(self._status, state="switching")
        embedder = self._embedder_for(result.model)
        embedder.load()  # the ONNX export, once per tuned model
        self._index.adopt(embedder, self._closing.is_set)
        self._record(result.model)
        for old in prune(self._cache_dir, KEEP_TUNED, embedder.exports_of):
            log.info("deleted the tuned encoder %s (not among the %d used last)", old.name, KEEP_TUNED)
        tuned = "reused" if result.reused else f"tuned in {result.seconds:.0f}s"
        self._status = replace(self._status, switches=self._status.switches + 1)
        self._finish(f"serving {result.model.name} ({tuned} on {result.pairs} pairs, switched in "
                     f"{time.perf_counter() - started:.0f}s)")  # fmt: skip
        return True

    def _finish(self, outcome: str) -> None:
        log.info("encoder tuning: %s", outcome)
        self._status = replace(self._status, state="idle", last=outcome, last_at=time.time())


def _nicer() -> None:
    """Put this thread below the ones that answer (Linux keeps a niceness per thread)."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the usual priority
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + NICER))
