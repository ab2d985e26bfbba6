"""Reads a knowledge directory and decides which files are fit to serve."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bot.knowledge.faq import parse_faq
from bot.knowledge.model import FaqEntry, KnowledgeFile, OutOfScopeGroup, Problem, normalised
from bot.knowledge.out_of_scope import is_out_of_scope_file, parse_out_of_scope
from bot.knowledge.policy import parse_policy

FAQ_SUFFIXES = (".yml", ".yaml")
POLICY_SUFFIXES = (".md",)


def is_knowledge_file(path: Path) -> bool:
    """Operators' files, not editors' swap and backup files or hidden folders."""
    name = path.name
    if name.startswith((".", "#", "~")) or name.endswith(("~", ".swp", ".tmp")):
        return False
    return path.suffix.lower() in FAQ_SUFFIXES + POLICY_SUFFIXES


def read_knowledge_file(root: Path, path: Path) -> KnowledgeFile:
    relative = path.relative_to(root).as_posix()
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:
        # The name holds bytes that are not UTF-8 (a file copied from an older system): it could not be
        # cited, stored or shown. Named here with those bytes escaped so the operator can find it.
        shown = relative.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        problem = Problem(shown, 1, "file name is not UTF-8: rename the file")
        return KnowledgeFile(shown, (), (problem,))
    try:
        raw = path.read_bytes()
    except OSError as err:
        return KnowledgeFile(relative, (), (Problem(relative, 1, f"cannot read file: {err.strerror or err}"),))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        message = f"not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})"
        return KnowledgeFile(relative, (), (Problem(relative, line, message),))
    if is_out_of_scope_file(path):
        return parse_out_of_scope(relative, text)
    if path.suffix.lower() in FAQ_SUFFIXES:
        return parse_faq(relative, text)
    return parse_policy(relative, text)


class KnowledgeDirMissing(FileNotFoundError):
    """The configured knowledge directory does not exist (or is not a directory)."""


def require_knowledge_dir(root: Path) -> None:
    """Raise KnowledgeDirMissing unless `root` is a directory."""
    if not root.is_dir():
        raise KnowledgeDirMissing(f"knowledge directory not found: {root}")


def read_knowledge_dir(root: Path) -> list[KnowledgeFile]:
    """Every knowledge file under `root`, parsed, in a stable order."""
    require_knowledge_dir(root)
    paths = sorted(p for p in root.rglob("*") if p.is_file() and is_knowledge_file(p) and not _in_hidden_dir(root, p))
    return [read_knowledge_file(root, p) for p in paths]


def _in_hidden_dir(root: Path, path: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts[:-1])


@dataclass(frozen=True)
class Vetting:
    """Which parsed files may replace what is served, and why the others may not."""

    accepted: tuple[KnowledgeFile, ...]
    rejected: tuple[KnowledgeFile, ...]  # carry their problems; their last good version stays served

    @property
    def problems(self) -> list[Problem]:
        return [p for f in self.rejected for p in f.problems]


def vet(files: Iterable[KnowledgeFile], owners: Mapping[str, str] | None = None) -> Vetting:
    """Reject invalid files, and files that reuse an id another file already has.

    When two files claim one id, the file that currently serves it (`owners`: id -> file) keeps it;
    otherwise the first file in path order does. The other file is rejected as a whole, so a half-edited
    file is never half-applied.
    """
    owners = owners or {}
    files = list(files)
    rejected: dict[str, KnowledgeFile] = {f.path: f for f in files if not f.ok}
    candidates = [f for f in files if f.ok]
    # Files that already own their ids claim them first; order is stable by path otherwise.
    candidates.sort(key=lambda f: (not all(owners.get(i.id) == f.path for i in f.items), f.path))

    claimed: dict[str, tuple[str, int]] = {}
    accepted: list[KnowledgeFile] = []
    for file in candidates:
        clashes = [
            Problem(
                file.path,
                item.line,
                f"duplicate id {item.id!r}: already used in {claimed[item.id][0]}:{claimed[item.id][1]}",
            )
            for item in file.items
            if item.id in claimed
        ]
        clashes += [
            Problem(file.path, item.line, f"duplicate id {item.id!r}: already served from {owners[item.id]}")
            for item in file.items
            if item.id not in claimed and owners.get(item.id) not in (None, file.path) and owners[item.id] in rejected
        ]
        if clashes:
            rejected[file.path] = KnowledgeFile(file.path, (), tuple(clashes))
            continue
        for item in file.items:
            claimed[item.id] = (file.path, item.line)
        accepted.append(file)
    accepted, contradicting = _without_contradictions(accepted)
    rejected.update((f.path, f) for f in contradicting)
    return Vetting(
        tuple(sorted(accepted, key=lambda f: f.path)), tuple(sorted(rejected.values(), key=lambda f: f.path))
    )


def _without_contradictions(files: list[KnowledgeFile]) -> tuple[list[KnowledgeFile], list[KnowledgeFile]]:
    """Reject out-of-scope files listing an FAQ question or alternate as a message to decline.

    The same words cannot be both answered and declined, and the example would not even win: its FAQ
    entry matches it as exactly and has a classifier trained on it.
    """
    phrasings: dict[str, tuple[str, KnowledgeFile]] = {}
    for file in files:
        for item in file.items:
            if isinstance(item, FaqEntry):
                for text in item.utterances():
                    phrasings.setdefault(normalised(text), (item.id, file))
    kept, rejected = [], []
    for file in files:
        clashes = [
            Problem(
                file.path,
                item.line,
                f"group {item.id!r}: example {example!r} is also a phrasing of FAQ entry "
                f"{phrasings[normalised(example)][0]!r} ({phrasings[normalised(example)][1].path}): "
                "a message cannot be both answered and declined",
            )
            for item in file.items
            if isinstance(item, OutOfScopeGroup)
            for example in item.examples
            if normalised(example) in phrasings
        ]
        if clashes:
            rejected.append(KnowledgeFile(file.path, (), tuple(clashes)))
        else:
            kept.append(file)
    return kept, rejected
