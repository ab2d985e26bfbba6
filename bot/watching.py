"""Watching an operator's directory for edits, through whatever happens to the directory itself.

Operators deploy knowledge and prompts by editing files in place, but also by swapping whole folders
(`mv kb kb.old && cp -r new kb`), re-cloning, or deleting and re-extracting them, and any file may
arrive with a name the watcher cannot decode. A file watcher follows the directory it was started on,
so after a swap it would watch the old one and never report an edit again; an error inside it would
end live reload for good. This loop restarts the watch on the configured path whenever the directory
is replaced, disappears or the watcher fails, and reloads once after each restart, since edits may have
been missed meanwhile.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from pathlib import Path

import anyio
from watchfiles import Change, awatch

log = logging.getLogger(__name__)

# How often the watcher wakes without an edit to check that the path still names the directory it watches.
CHECK_INTERVAL_MS = 500
RETRY_AFTER_S = 1.0  # after a watcher failure, or while the directory is missing


def _identity(directory: Path) -> tuple[int, int] | None:
    """Which directory the path names now (device, inode); None when there is none."""
    try:
        status = directory.stat()
    except OSError:
        return None
    return (status.st_dev, status.st_ino) if stat.S_ISDIR(status.st_mode) else None


async def watch_directory(
    directory: Path,
    on_change: Callable[[], Awaitable[None]],
    stop: anyio.Event,
    debounce_ms: int = 200,
    relevant: Callable[[Path], bool] | None = None,
) -> None:
    """Await `on_change()` after each burst of edits under `directory` until `stop` is set. Never raises.

    `relevant`: which changed paths count (all when None; a new folder always does). `on_change` errors are
    logged; the watch goes on.
    """

    def keep(change: Change, path: str) -> bool:
        # A new folder counts whatever its name: files written into it at once can land before the
        # watcher has started watching it, and then only a reload (which reads everything) finds them.
        return relevant is None or relevant(Path(path)) or (change == Change.added and Path(path).is_dir())

    async def reload() -> None:
        try:
            await on_change()
        except Exception:
            log.exception("reloading %s failed; what was loaded before stays in use", directory)

    # Edits may have been missed (before the first watch started, while the directory was away or the
    # watcher down): reload at the first wake-up of a new watch, once it is already recording edits.
    missed = True
    reported_missing = False
    while not stop.is_set():
        watched = _identity(directory)
        if watched is None:
            if not reported_missing:
                log.warning("%s is missing; its last loaded content stays in use until it is back", directory)
                reported_missing = True
            missed = True
            await _pause(stop, RETRY_AFTER_S)
            continue
        if reported_missing:
            log.info("%s is back; watching it again", directory)
            reported_missing = False
        try:
            batches = awatch(
                directory,
                watch_filter=keep,
                debounce=debounce_ms,
                step=min(50, debounce_ms),
                stop_event=stop,
                rust_timeout=CHECK_INTERVAL_MS,
                yield_on_timeout=True,
            )
            async with aclosing(batches):  # closed now, not when collected: each watch holds a thread
                async for changes in batches:
                    if _identity(directory) != watched:
                        log.info("%s was replaced; watching the new one", directory)
                        missed = True
                        break
                    if changes or missed:
                        missed = False
                        await reload()
        except Exception:
            log.exception("watching %s failed; restarting the watch", directory)
            missed = True
            await _pause(stop, RETRY_AFTER_S)


async def _pause(stop: anyio.Event, seconds: float) -> None:
    with anyio.move_on_after(seconds):
        await stop.wait()
