"""Vague messages get a question back, clear short ones an answer: measured on two sets written blind.

`evals/vague-messages.csv`: messages close to several topics or too short to decide; two people listed,
each on their own, the items that are plausible readings (`plausible_a`, `plausible_b`, most likely first)
and the second said whether an agent would have to ask (`vague_b`). `evals/short-clear.csv`: short
messages with one best item (`expected`, `expected_b`: the two labels).

Each message gets one of:
- answered (for a vague message: from an item either person listed; for a clear one: from its item),
- answered wrong (any other item),
- asked back, with a plausible item among the choices (vague; for a clear one: its item among them),
- asked back without one,
- declined (not sure, out of scope; a person may follow).

Runs the real engine (embedding model, Chroma index of the demo knowledge in a temporary folder, the
answer policy of config.yml), once with asking back turned on (`answering.clarify: auto`, whatever
config.yml says; it ships `off`) and once with `clarify: off`, side by side, on the encoder as shipped
(`index.tune: off`: no tuning runs here). --list prints every message with its outcome.

Usage:
  python bench/clarify.py [--knowledge knowledge] [--list]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from machine import machine, machine_line

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.answering.policy import Decision, DecisionKind, ResponsePolicy  # noqa: E402
from bot.config import load_config  # noqa: E402
from serving.runtime import build_engine  # noqa: E402

OUTCOMES = ("answered", "answered wrong", "asked, right among choices", "asked, none right", "declined")


def outcome(decision: Decision, right: set[str]) -> str:
    if decision.kind is DecisionKind.ANSWER and decision.answer is not None:
        return OUTCOMES[0] if decision.answer.item_id in right else OUTCOMES[1]
    if decision.kind is DecisionKind.CLARIFY:
        return OUTCOMES[2] if {h.item_id for h in decision.choices} & right else OUTCOMES[3]
    return OUTCOMES[4]


def read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def table(name: str, rows: Sequence[tuple[str, set[str]]], policies: dict[str, ResponsePolicy], show: bool) -> None:
    print(f"\n{name}: {len(rows)} messages")
    results = {label: [outcome(p.decide(text), right) for text, right in rows] for label, p in policies.items()}
    print("| outcome | " + " | ".join(policies) + " |")
    print("|---|" + "---:|" * len(policies))
    counts = {label: Counter(r) for label, r in results.items()}
    for o in OUTCOMES:
        cells = [f"{counts[label][o]} ({counts[label][o] / len(rows):.1%})" for label in policies]
        print(f"| {o} | " + " | ".join(cells) + " |")
    if show:
        first = next(iter(policies.values()))
        for (text, right), got in zip(rows, results[next(iter(policies))], strict=True):
            d = first.decide(text)
            shown = [h.item_id for h in d.choices] or ([d.answer.item_id] if d.answer else [])
            print(f"  {got:28} {text!r:45} -> {', '.join(shown)}   (right: {', '.join(sorted(right))})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--knowledge", type=Path, default=REPO / "knowledge")
    parser.add_argument("--vague", type=Path, default=REPO / "evals" / "vague-messages.csv")
    parser.add_argument("--clear", type=Path, default=REPO / "evals" / "short-clear.csv")
    parser.add_argument("--list", action="store_true", help="every message with its outcome (asking back on)")
    args = parser.parse_args(argv)
    vague = [(r["text"], set(r["plausible_a"].split("|")) | set(r["plausible_b"].split("|"))) for r in read(args.vague)]
    vague_b = [(t, right) for (t, right), r in zip(vague, read(args.vague), strict=True) if r["vague_b"] == "yes"]
    clear = [(r["text"], {r["expected"], r["expected_b"]}) for r in read(args.clear)]
    shipped = load_config(REPO / "config.yml")
    asking = shipped.answering.model_copy(update={"clarify": "auto"})
    frozen = shipped.index.model_copy(update={"tune": "off"})  # the shipped encoder, untuned
    config = shipped.model_copy(update={"answering": asking, "index": frozen})
    with tempfile.TemporaryDirectory() as work:
        engine = build_engine(config, knowledge_dir=args.knowledge, index_path=Path(work) / "chroma")
        engine.index.embedder.load()
        engine.sync.run()
        off = config.answering.model_copy(update={"clarify": "off"})
        policies = {
            "asking back (auto)": engine.policy,
            "off": ResponsePolicy(engine.index, off, config.messages.talk_to_human_button),
        }
        print(machine_line(machine()))
        print(engine.index.calibration.summary())
        table(args.vague.name, vague, policies, args.list)
        table(f"{args.vague.name}, only those the second person marked vague", vague_b, policies, False)
        table(args.clear.name, clear, policies, args.list)
        engine.index.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
