"""Forms files (forms.yml, in any folder): what a business action needs, asked for one slot at a time.

    - id: order_status
      action: action_order_status        # runs when every slot is filled
      validate: validate_order_status    # optional: a rasa-sdk FormValidationAction checking each answer
      slots:
        - name: order_number
          ask: What is your order number? It starts with NW-.
          type: pattern                  # email | number | text | pattern
          pattern: 'NW-?[0-9]{5,6}'
        - name: email
          ask: Which email address did you order with?
          type: email

An FAQ entry with `action: action_order_status` starts the form whose action that is (or runs the
action at once when no form collects for it). Every problem is reported with its file and line.
"""

from __future__ import annotations

import re
from pathlib import PurePath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bot.knowledge import limits
from bot.knowledge.entries import ActionName, EntryId, NonBlank, parse_entries
from bot.knowledge.model import Form, FormSlot, KnowledgeFile

FILE_NAMES = ("forms.yml", "forms.yaml")
SlotName = EntryId


def is_forms_file(path: PurePath) -> bool:
    return path.name.lower() in FILE_NAMES


class _SlotSchema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: SlotName
    ask: NonBlank
    type: Literal["email", "number", "text", "pattern"]
    pattern: NonBlank | None = None

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as err:
                raise ValueError(f"not a regular expression: {err}") from err
        return value

    @model_validator(mode="after")
    def _pattern_with_its_type(self) -> _SlotSchema:
        if (self.type == "pattern") != (self.pattern is not None):
            raise ValueError("a pattern goes with type: pattern, and type: pattern needs one")
        return self


class _FormSchema(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: EntryId
    action: ActionName
    validate_: ActionName | None = Field(default=None, alias="validate")  # a rasa-sdk FormValidationAction
    slots: list[_SlotSchema] = Field(min_length=1)

    @field_validator("slots")
    @classmethod
    def _distinct(cls, slots: list[_SlotSchema]) -> list[_SlotSchema]:
        names = [slot.name for slot in slots]
        if len(set(names)) != len(names):
            raise ValueError(f"slot names repeat: {sorted({n for n in names if names.count(n) > 1})}")
        return slots


_LIMITS = {"action": limits.TAG}


def parse_forms(path: str, text: str) -> KnowledgeFile:
    def build(form: _FormSchema, line: int) -> Form:
        slots = tuple(FormSlot(s.name, s.ask, s.type, s.pattern) for s in form.slots)
        return Form(id=form.id, action=form.action, slots=slots, file=path, line=line, validate=form.validate_)

    return parse_entries(path, text, _FormSchema, build, "forms", _LIMITS)
