#!/usr/bin/env python3
"""What the demo's out-of-scope examples (knowledge/out_of_scope.yml) do, side by side in one run.

For each demo case file it runs `bot eval` (a subprocess, private index, default settings) on three
copies of the demo knowledge base:

  without        knowledge/ minus out_of_scope.yml
  with           knowledge/ as shipped
  with, no near  out_of_scope.yml minus every example whose cosine similarity to any case of that case
                 file is at least --near (default 0.8): how much of the effect is examples that happen to
                 restate a case ("tell me a joke" is in the examples and in demo-cases.csv)

and prints top-1, in-scope accuracy, out-of-scope recall and precision, and the in-scope messages that
were declined, with the machine it ran on.

Usage:
  python bench/out_of_scope.py [--cases evals/demo-cases.csv,evals/demo-holdout.csv] [--near 0.8]
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml
from banking77 import run_eval  # bench/banking77.py (scripts run from bench/)
from machine import machine, machine_line

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.evaluation.scoring import OUT_OF_SCOPE  # noqa: E402
from bot.retrieval.embedding import Embedder  # noqa: E402

KNOWLEDGE = REPO / "knowledge"
OUT_OF_SCOPE_FILE = "out_of_scope.yml"
WORK = REPO / ".data" / "bench" / "out_of_scope"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="evals/demo-cases.csv,evals/demo-holdout.csv")
    parser.add_argument("--near", type=float, default=0.8)
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--bot", type=Path, default=REPO / ".venv" / "bin" / "bot")
    return parser.parse_args(argv)


def case_texts(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


def copy_knowledge(target: Path, groups: list[dict[str, Any]] | None) -> Path:
    """The demo knowledge base at `target`, with `groups` as its out-of-scope file (none when None)."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(KNOWLEDGE, target)
    (target / OUT_OF_SCOPE_FILE).unlink()
    if groups is not None:
        (target / OUT_OF_SCOPE_FILE).write_text(yaml.safe_dump(groups, sort_keys=False), encoding="utf-8")
    return target


def without_near(
    groups: list[dict[str, Any]], cases: list[str], embedder: Embedder, near: float
) -> tuple[list[dict[str, Any]], list[tuple[float, str, str]]]:
    """The groups minus examples within `near` of a case, and what was removed (similarity, example, case)."""
    examples = [e for g in groups for e in g["examples"]]
    similarity = embedder.embed(examples) @ embedder.embed(cases).T
    removed = {
        examples[i]: (float(similarity[i].max()), examples[i], cases[int(similarity[i].argmax())])
        for i in range(len(examples))
        if similarity[i].max() >= near
    }
    kept = [{**g, "examples": [e for e in g["examples"] if e not in removed]} for g in groups]
    return [g for g in kept if g["examples"]], sorted(removed.values(), reverse=True)


def figures(report: dict[str, Any]) -> dict[str, Any]:
    cases = report["cases"]
    declined = [c for c in cases if c["expected"] != OUT_OF_SCOPE and c["predicted"] == OUT_OF_SCOPE]
    correct = sum(c["expected"] == c["predicted"] for c in cases)
    return {
        "correct": correct,
        "n": len(cases),
        "top1": report["top1_accuracy"],
        "in_scope": report["in_scope_accuracy"],
        "oos_recall": report["oos_recall"],
        "oos_precision": report["oos_precision"],
        "in_scope_declined": len(declined),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    about = machine()
    args.work.mkdir(parents=True, exist_ok=True)
    config = args.work / "config.yml"
    config.write_text(yaml.safe_dump({"index": {"path": str(args.work / "chroma")}}), encoding="utf-8")
    groups = yaml.safe_load((KNOWLEDGE / OUT_OF_SCOPE_FILE).read_text(encoding="utf-8"))
    embedder = Embedder()
    rows: list[dict[str, Any]] = []
    for name in args.cases.split(","):
        cases = REPO / name
        trimmed, removed = without_near(groups, case_texts(cases), embedder, args.near)
        print(f"\n{name}: {len(removed)} examples within {args.near} of a case, left out in 'with, no near':")
        for similarity, example, case in removed:
            print(f"  {similarity:.2f}  {example!r}  ~  {case!r}")
        variants = {"without": None, "with": groups, "with, no near": trimmed}
        for variant, variant_groups in variants.items():
            knowledge = copy_knowledge(args.work / "knowledge" / variant.replace(", ", "-"), variant_groups)
            out = args.work / f"{cases.stem}-{variant.replace(', ', '-')}.json"
            log = out.with_suffix(".log")
            report, seconds, _ = run_eval(args.bot, config, knowledge, cases, out, log)
            rows.append({"cases": name, "variant": variant, **figures(report), "seconds": round(seconds, 1)})
            print(f"  {variant:14s} {rows[-1]}", flush=True)

    print(f"\nmachine: {machine_line(about)}")
    header = f"{'cases':26s} {'out-of-scope examples':22s} {'top-1':>16s} {'in-scope':>9s} {'OOS R':>7s} {'OOS P':>7s}"
    print(header + "  in-scope declined")
    print("-" * (len(header) + 19))
    for r in rows:
        top1 = f"{r['correct']}/{r['n']} {r['top1']:.2%}"
        print(
            f"{r['cases']:26s} {r['variant']:22s} {top1:>16s} {r['in_scope']:>9.2%} {r['oos_recall']:>7.2%} "
            f"{r['oos_precision']:>7.2%}  {r['in_scope_declined']}"
        )
    (args.work / "results.json").write_text(json.dumps({"machine": about, "rows": rows}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
