"""BANKING77 as a knowledge base and eval cases, for bench/banking77.py and the scripts built on it.

Each intent becomes one FAQ entry (id = intent name, question = its first training example, alternates =
the setting's other training examples, a placeholder answer); the test messages become cases (expected =
the intent, or out_of_scope for an intent the setting holds out). The data is read in place.
"""

from __future__ import annotations

import csv
import json
import random
import re
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "banking77"
SHOTS = 10
HELD_OUT_INTENTS = 10
HELD_OUT_SEED = 77
OUT_OF_SCOPE = "out_of_scope"
FAQ_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")  # the product's FAQ id rule (bot/knowledge/faq.py)


def faq_ids(categories: list[str]) -> dict[str, str]:
    """Intent label -> FAQ id. One BANKING77 label, 'reverted_card_payment?', has a character FAQ ids
    may not contain; disallowed characters are dropped (-> 'reverted_card_payment'), collisions are errors."""
    ids = {c: re.sub(r"[^A-Za-z0-9_.\-]", "", c) for c in categories}
    bad = [c for c, i in ids.items() if not FAQ_ID.match(i)]
    if bad or len(set(ids.values())) != len(ids):
        sys.exit(f"cannot map intent labels to distinct FAQ ids: {bad or ids}")
    return ids


def read_rows(path: Path) -> list[tuple[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if set(reader.fieldnames or []) != {"text", "category"}:
            sys.exit(f"{path}: expected columns text,category, found {reader.fieldnames}")
        return [(row["text"].strip(), row["category"].strip()) for row in reader]


def load_data(data: Path) -> tuple[list[str], dict[str, list[str]], list[tuple[str, str]]]:
    for name in ("train.csv", "test.csv", "categories.json"):
        if not (data / name).is_file():
            sys.exit(f"{data / name}: not found (pass --data DIR)")
    categories = json.loads((data / "categories.json").read_text(encoding="utf-8"))
    train: dict[str, list[str]] = defaultdict(list)
    for text, category in read_rows(data / "train.csv"):
        train[category].append(text)  # kept in file order
    test = read_rows(data / "test.csv")
    stray = ({c for c in train} | {c for _, c in test}) - set(categories)
    missing = [c for c in categories if not train.get(c)]
    if stray or missing:
        sys.exit(f"{data}: categories.json disagrees with the CSVs (stray {sorted(stray)}, no training rows {missing})")
    return categories, dict(train), test


def held_out_intents(categories: list[str]) -> list[str]:
    return sorted(random.Random(HELD_OUT_SEED).sample(categories, HELD_OUT_INTENTS))


def examples_for(
    setting: str, seed: int | None, categories: list[str], train: dict[str, list[str]]
) -> dict[str, list[str]]:
    if setting == "full":
        return {c: list(train[c]) for c in categories}
    if setting == "oos":
        held_out = set(held_out_intents(categories))
        return {c: list(train[c]) for c in categories if c not in held_out}
    rng = random.Random(seed)
    chosen = {}
    for category in categories:  # fixed order, so a seed always draws the same examples
        picks = sorted(rng.sample(range(len(train[category])), SHOTS))
        chosen[category] = [train[category][i] for i in picks]  # train-file order
    return chosen


def write_knowledge(directory: Path, examples: dict[str, list[str]], ids: dict[str, str]) -> int:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    utterances = 0
    for category, texts in examples.items():
        entry = {
            "id": ids[category],
            "question": texts[0],
            "alternates": texts[1:],
            "answer": f"[{ids[category]}] answer",
            "tags": ["banking77"],
        }
        (directory / f"{ids[category]}.yml").write_text(
            yaml.safe_dump([entry], allow_unicode=True, sort_keys=False, width=1000), encoding="utf-8"
        )
        utterances += len(texts)
    return utterances


def write_cases(
    path: Path, test: list[tuple[str, str]], ids: dict[str, str], held_out: frozenset[str] = frozenset()
) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "expected"])
        writer.writerows((text, OUT_OF_SCOPE if category in held_out else ids[category]) for text, category in test)
