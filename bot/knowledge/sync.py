"""Keeps the index serving what is in the knowledge directory, now and whenever an operator edits it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread

from bot.knowledge.loader import is_knowledge_path, read_knowledge_dir, vet
from bot.knowledge.model import Form, KnowledgeFile
from bot.retrieval.embedding import Progress
from bot.retrieval.index import KnowledgeIndex, SyncReport
from bot.watching import watch_directory

log = logging.getLogger(__name__)

FOLLOW_INTERVAL_S = 0.5  # how often a process that does not sync looks for a newer shared index


@dataclass(frozen=True)
class SyncStatus:
    """What the last sync did, for /health: operators see a broken file there, tests wait on `syncs`."""

    syncs: int  # syncs finished since start-up (each one read the whole directory)
    last_at: float | None  # when the last one finished (Unix time)
    rejected: tuple[str, ...]  # the problems (file:line: reason) of files the last sync did not apply


class KnowledgeSync:
    def __init__(self, directory: Path, index: KnowledgeIndex) -> None:
        self.directory = directory
        self.index = index
        self._status = SyncStatus(0, None, ())
        self._forms: dict[str, tuple[Form, ...]] = {}  # file -> its forms, as last applied
        self.forms: dict[str, Form] = {}  # the forms of the last good version of each forms file, by id

    @property
    def status(self) -> SyncStatus:
        return self._status

    def run(self, progress: Progress | None = None, calibrate_in_background: bool = False) -> SyncReport:
        """Apply the directory as it is now. Broken files are logged and their last good version kept."""
        files = read_knowledge_dir(self.directory)
        report = self.index.sync(files, progress, calibrate_in_background)
        self._apply_forms(files, {file.path for file in report.rejected})
        problems = tuple(str(problem) for file in report.rejected for problem in file.problems)
        self._status = SyncStatus(self._status.syncs + 1, time.time(), problems)
        for file in report.rejected:
            for problem in file.problems:
                log.warning("knowledge file not applied (last good version stays served): %s", problem)
        if report.changed or report.rejected:
            log.info("knowledge synced: %s", report.summary())
        return report

    def _apply_forms(self, files: list[KnowledgeFile], rejected: set[str]) -> None:
        self._forms = {
            file.path: tuple(item for item in file.items if isinstance(item, Form))
            if file.path not in rejected else self._forms.get(file.path, ())
            for file in files
        }  # fmt: skip
        self.forms = {form.id: form for forms in self._forms.values() for form in forms}

    def load_shared(self, forms: bool = False) -> bool:
        """In a process that does not sync a shared index: load what the syncing process wrote, if it
        changed, and the forms from the (shared) knowledge folder (also when `forms`: at start-up).
        True when something new was loaded."""
        if not self.index.refresh() and not forms:
            return False
        files = read_knowledge_dir(self.directory)
        self._apply_forms(files, {file.path for file in vet(files, self.index.owners()).rejected})
        return True

    async def follow(self, stop: anyio.Event) -> None:
        """Until `stop`: load the shared index each time the process that syncs it has changed it."""
        unreachable = False
        while not stop.is_set():
            try:
                if await anyio.to_thread.run_sync(self.load_shared):
                    log.info("knowledge loaded from the shared index (%d records)", len(self.index))
                unreachable = False
            except Exception as err:  # the server away, or a file unreadable: try again, keep what is loaded
                if not unreachable:
                    log.warning("loading the shared index failed (%s); what was loaded stays in use", err)
                unreachable = True
            with anyio.move_on_after(FOLLOW_INTERVAL_S):
                await stop.wait()

    async def watch(
        self, stop: anyio.Event, debounce_ms: int = 200, on_change: Callable[[], None] = lambda: None
    ) -> None:
        """Re-sync after each burst of edits until `stop` is set; a failed sync keeps the index as it was.
        `on_change` is called after each sync that changed what the index serves (the encoder's tuner)."""

        async def resync() -> None:
            # New content answers at once; the answer threshold catches up when recalibrated.
            report = await anyio.to_thread.run_sync(lambda: self.run(calibrate_in_background=True))
            if report.changed:
                on_change()

        await watch_directory(self.directory, resync, stop, debounce_ms, relevant=is_knowledge_path)
