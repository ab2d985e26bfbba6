"""Numbered schema migrations: plain SQL files per dialect (bot/storage/<dialect>/migrations/NNNN_name.sql),
applied in order and recorded in `schema_migrations` with a checksum of what ran.

A store records each migration it applied. Opening it applies the ones it lacks; a store that has a
migration this version does not know (written by a newer version), or one whose file has changed since
it was applied, is refused with a message saying which, and left as it was.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from bot.storage.sql import StoreError

_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations(dialect: str) -> tuple[Migration, ...]:
    """The dialect's migrations, in order (numbers from 1, none missing)."""
    folder = resources.files("bot.storage").joinpath(dialect, "migrations")
    found: list[Migration] = []
    for entry in folder.iterdir():
        matched = _FILE.fullmatch(entry.name)
        if matched:
            found.append(Migration(int(matched[1]), matched[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{dialect} migrations are not numbered 1..{len(found)}: {[m.version for m in found]}")
    return tuple(found)


def check_applied(known: tuple[Migration, ...], applied: dict[int, tuple[str, str]], where: str) -> list[Migration]:
    """The migrations still to apply, given what the store recorded (version -> (name, checksum))."""
    by_version = {m.version: m for m in known}
    for version, (name, checksum) in sorted(applied.items()):
        migration = by_version.get(version)
        if migration is None:
            raise StoreError(
                f"conversation store {where} has migration {version:04d}_{name}, which this version does not "
                "know: it was written by a newer version of the bot"
            )
        if migration.checksum != checksum:
            raise StoreError(
                f"conversation store {where}: migration {version:04d}_{name} was applied from a different file "
                "than this version's; restore the original migration file"
            )
    return [m for m in known if m.version not in applied]
