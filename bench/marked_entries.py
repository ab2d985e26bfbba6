"""Precision and recall of the marked-entry trigger on a labelled set written blind (evals/marked-entries.csv).

A message hands the conversation over through this trigger when the answer policy answers it from an FAQ
entry or policy section marked for a person (`handoff: true`; the demo's knowledge/faq/complaints.yml).
Measured against `complaint_or_legal` (a complaint about the shop, or a legal threat against it), with
the request-for-a-person and frustration triggers beside it: what any of the three would do.

Runs the real engine (embedding model, Chroma index of the demo knowledge in a temporary folder, answer
policy at its default settings). Prints the machine, the table, and, with --misses, every message the
trigger got wrong with the item it was answered from.

Usage:
  python bench/marked_entries.py [--cases evals/marked-entries.csv] [--knowledge knowledge] [--misses]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

from handoff_triggers import scores  # bench/handoff_triggers.py (scripts run from bench/)
from machine import machine, machine_line

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.answering.frustration import FrustrationDetector  # noqa: E402
from bot.answering.handoff import asks_for_human  # noqa: E402
from bot.answering.policy import DecisionKind  # noqa: E402
from bot.config import load_config  # noqa: E402
from serving.runtime import build_engine  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=Path, default=REPO / "evals" / "marked-entries.csv")
    parser.add_argument("--knowledge", type=Path, default=REPO / "knowledge")
    parser.add_argument("--misses", action="store_true", help="list every false positive and false negative")
    args = parser.parse_args(argv)
    with args.cases.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    texts = [row["text"] for row in rows]
    labelled = [row["complaint_or_legal"] == "yes" for row in rows]
    config = load_config(REPO / "config.yml")
    with tempfile.TemporaryDirectory() as work:
        engine = build_engine(config, knowledge_dir=args.knowledge, index_path=Path(work) / "chroma")
        engine.index.embedder.load()
        report = engine.sync.run()
        decisions = [engine.policy.decide(text) for text in texts]
        engine.index.close()
    marked = [d.kind is DecisionKind.ANSWER and d.answer is not None and d.answer.handoff for d in decisions]
    detector = FrustrationDetector(config.handoff.frustration_below)
    button = config.messages.talk_to_human_button
    any_trigger = [m or asks_for_human(t, button) or detector.frustrated(t) for m, t in zip(marked, texts, strict=True)]
    marked_items = sorted({d.answer.item_id for d in decisions if d.answer is not None and d.answer.handoff})
    print(machine_line(machine()))
    print(f"{args.cases.name}: {len(rows)} messages, {sum(labelled)} complaints or legal threats")
    print(f"knowledge {args.knowledge}: {report.summary()}")
    print(f"marked items answered from: {', '.join(marked_items) or '-'}")
    print(f"{'trigger':44s} {'TP':>4s} {'FP':>4s} {'FN':>4s} {'precision':>10s} {'recall':>8s}")
    for name, predicted in (("marked entry", marked), ("any of marked entry, request, frustration", any_trigger)):
        tp, fp, fn, precision, recall = scores(predicted, labelled)
        print(f"{name:44s} {tp:4d} {fp:4d} {fn:4d} {precision:10.1%} {recall:8.1%}")
    if args.misses:
        for text, said, truth, decision in zip(texts, marked, labelled, decisions, strict=True):
            if said != truth:
                where = decision.answer.item_id if decision.answer is not None else str(decision.kind)
                print(f"  {'FP' if said else 'FN'}  [{where}]  {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
