"""Reads a knowledge directory and decides which files are fit to serve."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from bot.knowledge import limits
from bot.knowledge.faq import parse_faq
from bot.knowledge.forms import is_forms_file, parse_forms
from bot.knowledge.model import FaqEntry, KnowledgeFile, OutOfScopeGroup, Problem, normalised, texts_to_embed
from bot.knowledge.out_of_scope import is_out_of_scope_file, parse_out_of_scope
from bot.knowledge.policy import parse_policy

FAQ_SUFFIXES = (".yml", ".yaml")
POLICY_SUFFIXES = (".md",)


def _is_editors(name: str) -> bool:
    """Hidden files and folders, editors' swap, backup and lock files (Emacs' lock files are broken links)."""
    return name.startswith((".", "#", "~")) or name.endswith(("~", ".swp", ".tmp"))


def is_knowledge_file(path: Path) -> bool:
    """Operators' files, not editors' swap and backup files or hidden folders."""
    return not _is_editors(path.name) and path.suffix.lower() in FAQ_SUFFIXES + POLICY_SUFFIXES


def is_knowledge_path(path: Path) -> bool:
    """Whether a change to `path` can change what `read_knowledge_dir` reads: live reload reacts to these.

    Besides knowledge files, any name without a suffix, which may be a folder or a symbolic link to one:
    deleting a link to a folder, or a link breaking, changes no knowledge file's name.
    """
    return is_knowledge_file(path) or (path.suffix == "" and not _is_editors(path.name))


def _shown(root: Path, path: Path) -> tuple[str, bool]:
    """`path` relative to `root` as operators see it, and whether it is UTF-8 (else its bytes are escaped)."""
    relative = path.relative_to(root).as_posix()
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:
        return relative.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"), False
    return relative, True


def read_knowledge_file(root: Path, path: Path) -> KnowledgeFile:
    relative, readable = _shown(root, path)
    if not readable:
        # The name holds bytes that are not UTF-8 (a file copied from an older system): it could not be
        # cited, stored or shown. Named here with those bytes escaped so the operator can find it.
        return KnowledgeFile(relative, (), (Problem(relative, 1, "file name is not UTF-8: rename the file"),))
    try:
        with path.open("rb") as handle:
            raw = handle.read(limits.MAX_FILE_BYTES + 1)  # never more: the file may be any size
            size = os.fstat(handle.fileno()).st_size
    except OSError as err:
        return KnowledgeFile(relative, (), (Problem(relative, 1, f"cannot read file: {err.strerror or err}"),))
    if len(raw) > limits.MAX_FILE_BYTES:
        limit_line = raw[: limits.MAX_FILE_BYTES].count(b"\n") + 1
        problem = Problem(relative, 1, limits.file_too_large(max(size, len(raw)), limit_line))
        return KnowledgeFile(relative, (), (problem,))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        message = f"not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})"
        return KnowledgeFile(relative, (), (Problem(relative, line, message),))
    if is_out_of_scope_file(path):
        return parse_out_of_scope(relative, text)
    if is_forms_file(path):
        return parse_forms(relative, text)
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
    """Every knowledge file under `root`, parsed, in a stable order.

    Hidden folders are skipped. A symbolic link (to a file or a folder) is followed when it leads to a
    place inside `root` that is not read anyway, and whose edits live reload sees; a link that is broken,
    loops, leads outside `root` or to what is read anyway is a problem of its own, at the link's path.
    """
    require_knowledge_dir(root)
    paths, links = _find(root)
    read = [(path, read_knowledge_file(root, path)) for path in paths]
    read += [(path, KnowledgeFile(problem.file, (), (problem,))) for path, problem in links]
    return [file for _, file in sorted(read, key=lambda pair: pair[0])]


def _find(root: Path) -> tuple[list[Path], list[tuple[Path, Problem]]]:
    """The knowledge files under `root`, and the symbolic links that are not followed (with why not)."""
    inside = root.resolve()
    files: list[Path] = []
    links: list[tuple[Path, Problem]] = []
    walked: dict[Path, str] = {}  # real folder or file -> where it was read from, as operators see it

    def refuse(path: Path, reason: str) -> None:
        if is_knowledge_path(path):
            links.append((path, Problem(_shown(root, path)[0], 1, reason)))

    def visit(folder: Path, real: Path, above: frozenset[Path]) -> None:
        if real in walked:
            return  # inside a folder another link already led to
        walked[real] = _shown(root, folder)[0]
        try:
            with os.scandir(folder) as scan:
                entries = sorted(scan, key=lambda entry: entry.name)
        except OSError as err:
            links.append((folder, Problem(_shown(root, folder)[0], 1, f"cannot read folder: {err.strerror or err}")))
            return
        for entry in entries:
            path = folder / entry.name
            if entry.name.startswith("."):
                continue
            if not entry.is_symlink():
                if entry.is_dir(follow_symlinks=False):
                    visit(path, real / entry.name, above | {real})
                elif entry.is_file(follow_symlinks=False) and is_knowledge_file(path):
                    files.append(path)
                    walked[real / entry.name] = _shown(root, path)[0]
                continue
            target, problem = _follow(path)
            if target is None:
                refuse(path, problem)
            elif target.is_dir() and (target in above or target == real):
                refuse(path, f"symbolic link loop: it leads to {_named(inside, target)}, a folder it is in")
            elif target.is_dir() or is_knowledge_file(path):
                problem = _unfollowable(inside, target, walked)
                if problem:
                    refuse(path, problem)
                elif target.is_dir():
                    visit(path, target, above | {real})
                else:
                    files.append(path)
                    walked[target] = _shown(root, path)[0]

    visit(root, inside, frozenset())
    return files, links


def _unfollowable(inside: Path, target: Path, walked: Mapping[Path, str]) -> str:
    """Why a link to `target` (a folder, or a knowledge file) is not followed; "" when it is.

    Followed: links to places that nothing else reads (hidden folders: `faq.yml -> .releases/v2/faq.yml`,
    as a Kubernetes ConfigMap mounts files), where live reload sees each edit.
    """
    if not target.is_relative_to(inside):
        return (
            f"symbolic link to {target}, outside the knowledge folder: live reload cannot see edits there; "
            "move it into the knowledge folder (a link to a place inside it is followed)"
        )
    named = _named(inside, target)
    if not (target.is_dir() or target.is_file()):
        return f"symbolic link to {named}, which is neither a file nor a folder"
    if not any(part.startswith(".") for part in target.relative_to(inside).parts):
        return f"symbolic link to {named}, which is read as it is: remove the link (it would be served twice)"
    if target in walked:
        return f"symbolic link to {named}, which is read already as {walked[target]}: remove one of the links"
    if target.is_file() and not is_knowledge_file(target):
        return (
            f"symbolic link to {named}: live reload sees edits to .yml, .yaml and .md files only; "
            "give the file it leads to such a name"
        )
    return ""


def _follow(link: Path) -> tuple[Path | None, str]:
    """Where a symbolic link leads in the end, or None and why it leads nowhere."""
    try:
        return link.resolve(strict=True), ""
    except RuntimeError:  # how Python before 3.13 reports a loop
        return None, f"symbolic link loop: {link.name} -> {_link_text(link)} leads back to itself"
    except OSError as err:
        said = _link_text(link)
        if err.errno == errno.ELOOP:
            return None, f"symbolic link loop: {link.name} -> {said} leads back to itself"
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            # Through a chain of links, or a missing folder on the way: say what is missing.
            named, lost = os.path.normpath(link.parent / said), str(err.filename or "")
            missing = f" ({os.path.relpath(lost, link.parent)} does not exist)" if lost and lost != named else ""
            return None, f"broken symbolic link to {said}{missing}"
        return None, f"cannot follow symbolic link to {said}: {err.strerror or err}"


def _link_text(link: Path) -> str:
    try:
        return os.readlink(link)
    except OSError:  # replaced meanwhile
        return "?"


def _named(root: Path, target: Path) -> str:
    return "the knowledge folder itself" if target == root else target.relative_to(root).as_posix()


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
    rejected |= _behind_unreadable_folders(rejected.values(), set(owners.values()))
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
    accepted, too_many = _within_text_limit(accepted, set(owners.values()))
    rejected.update((f.path, f) for f in too_many)
    return Vetting(
        tuple(sorted(accepted, key=lambda f: f.path)), tuple(sorted(rejected.values(), key=lambda f: f.path))
    )


def _behind_unreadable_folders(problems: Iterable[KnowledgeFile], serving: set[str]) -> dict[str, KnowledgeFile]:
    """The served files inside a folder that could not be read (a broken link to it, no permission).

    They were not deleted, only not seen: each keeps its last good version, like any file with a problem.
    """
    kept = {}
    for folder in problems:
        if Path(folder.path).suffix.lower() in FAQ_SUFFIXES + POLICY_SUFFIXES or not folder.problems:
            continue  # a file's own problem
        reason = folder.problems[0].message
        for path in sorted(f for f in serving if f.startswith(f"{folder.path}/")):
            note = f"not read: {folder.path}: {reason} (the last good version stays served)"
            kept[path] = KnowledgeFile(path, (), (Problem(path, 1, note),))
    return kept


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


def _within_text_limit(
    files: list[KnowledgeFile], serving: set[str]
) -> tuple[list[KnowledgeFile], list[KnowledgeFile]]:
    """Reject the files that would take the knowledge base past limits.MAX_TEXTS texts to embed.

    Files that serve now (`serving`) count first, then the others in path order: an addition that does
    not fit is rejected, not what was already served. Only files being applied count: one that keeps its
    last good version for another problem was within the limit when that version was applied.
    """
    kept: list[KnowledgeFile] = []
    rejected: list[KnowledgeFile] = []
    total = 0
    for file in sorted(files, key=lambda f: (f.path not in serving, f.path)):
        counts = [texts_to_embed(item) for item in file.items]
        if total + sum(counts) <= limits.MAX_TEXTS:
            kept.append(file)
            total += sum(counts)
            continue
        # Point at the entry on which the limit falls.
        running, line = total, 1
        for item, count in zip(file.items, counts, strict=True):
            running += count
            if running > limits.MAX_TEXTS:
                line = item.line
                break
        problem = Problem(file.path, line, limits.too_many_texts(sum(counts), total))
        rejected.append(KnowledgeFile(file.path, (), (problem,)))
    return kept, rejected
