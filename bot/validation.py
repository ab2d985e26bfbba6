"""Turns pydantic validation errors into (path, reason) pairs that read well next to a file and line."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import ValidationError


@dataclass(frozen=True)
class FieldProblem:
    path: tuple[str | int, ...]  # where in the document, as keys and list indexes
    reason: str

    @property
    def dotted(self) -> str:
        return ".".join(str(part) for part in self.path) or "(top level)"


_URL_PASSWORD = re.compile(r"(?<=://)([^/@:]*):[^/@]*@")  # scheme://user:PASSWORD@host


def _without_password(value: object) -> object:
    """A refused value as it may be shown: a URL's password is a secret, even in a wrong place."""
    return _URL_PASSWORD.sub(r"\1:***@", value) if isinstance(value, str) else value


def field_problems(err: ValidationError) -> list[FieldProblem]:
    problems = []
    for detail in err.errors(include_url=False):
        path = tuple(detail["loc"])
        kind = detail["type"]
        if kind == "extra_forbidden":
            reason = "unknown key"
        elif kind == "missing":
            reason = "required key is missing"
        elif kind in ("too_short", "string_too_short") and detail.get("ctx", {}).get("min_length") == 1:
            reason = "must not be empty"
        else:
            reason = str(detail["msg"])
            if "input" in detail and not isinstance(detail["input"], dict | list):
                reason += f" (got {_without_password(detail['input'])!r})"
        problems.append(FieldProblem(path, reason))
    return problems
