"""Precision and recall of the handoff triggers on a labelled set written blind (evals/handoff-triggers.csv).

Triggers measured, each against its own label:
- the customer asks for a person (bot.answering.handoff.asks_for_human, what the answer policy uses)
  vs `asks_for_person`;
- frustration (bot.answering.frustration.FrustrationDetector at handoff.frustration_below) vs `frustrated`;
- either of the two (what hands a conversation over from one message) vs either label.

Prints the machine, a table, and the misses of each trigger (false positives and false negatives), so a
reader can judge them. The not-sure streak is a count of replies, not a property of one message: tests cover it.

Usage:
  python bench/handoff_triggers.py [--cases evals/handoff-triggers.csv] [--threshold -0.5] [--misses]
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from machine import machine, machine_line  # bench/machine.py (scripts run from bench/)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.answering.frustration import FrustrationDetector  # noqa: E402
from bot.answering.handoff import asks_for_human  # noqa: E402
from bot.config import MessagesSettings  # noqa: E402


def scores(predicted: list[bool], labelled: list[bool]) -> tuple[int, int, int, float, float]:
    tp = sum(p and t for p, t in zip(predicted, labelled, strict=True))
    fp = sum(p and not t for p, t in zip(predicted, labelled, strict=True))
    fn = sum(t and not p for p, t in zip(predicted, labelled, strict=True))
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    return tp, fp, fn, precision, recall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=Path, default=REPO / "evals" / "handoff-triggers.csv")
    parser.add_argument("--threshold", type=float, default=-0.5, help="frustration: VADER compound at or below")
    parser.add_argument("--misses", action="store_true", help="list every false positive and false negative")
    args = parser.parse_args(argv)
    with args.cases.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    button = MessagesSettings().talk_to_human_button
    detector = FrustrationDetector(args.threshold)
    texts = [row["text"] for row in rows]
    asks = [row["asks_for_person"] == "yes" for row in rows]
    angry = [row["frustrated"] == "yes" for row in rows]
    said_asks = [asks_for_human(text, button) for text in texts]
    said_angry = [detector.frustrated(text) for text in texts]
    either = [a or b for a, b in zip(asks, angry, strict=True)]
    said_either = [a or b for a, b in zip(said_asks, said_angry, strict=True)]
    print(machine_line(machine()))
    print(f"{args.cases.name}: {len(rows)} messages, {sum(asks)} asking for a person, {sum(angry)} frustrated; "
          f"frustration threshold {args.threshold}")  # fmt: skip
    print("| trigger | labelled yes | triggered | true pos. | false pos. | false neg. | precision | recall |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    measured = (
        ("asks for a person", said_asks, asks),
        ("frustration (VADER)", said_angry, angry),
        ("either (hands over)", said_either, either),
    )
    for name, predicted, labelled in measured:
        tp, fp, fn, precision, recall = scores(predicted, labelled)
        print(f"| {name} | {sum(labelled)} | {sum(predicted)} | {tp} | {fp} | {fn} | {precision:.1%} | {recall:.1%} |")
    if args.misses:
        for name, predicted, labelled in measured[:2]:
            print(f"\n{name}:")
            for text, p, t in zip(texts, predicted, labelled, strict=True):
                if p != t:
                    print(f"  {'false positive' if p else 'false negative'}: {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
