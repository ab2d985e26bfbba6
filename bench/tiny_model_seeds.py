#!/usr/bin/env python3
"""The tiny test model's build, on several seeds in one run: does every seed reach the verified behaviour?

tests/tiny_model.py trains the tiny dialogue model until every prompt shape the bot sends passes its
check (the expected reply leads by MARGIN logits at every token, on held-out prompts), or fails naming
the shape. The check itself does not depend on the seed. This script builds the model once per seed,
in turn, and prints per seed the steps it needed, the time, and the weakest margin of each shape, then
a markdown table. Exits 1 if any seed failed.

Usage:
  python bench/tiny_model_seeds.py [--seeds 0 1 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from machine import machine, machine_line  # bench/machine.py (scripts run from bench/)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests/tiny_model.py


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", type=Path, default=None, help="write every seed's report here")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Imported by name: tests/ is test code, outside what mypy checks strictly.
    tiny = importlib.import_module("tests.tiny_model")
    print(machine_line(machine()))
    print(f"margin {tiny.MARGIN}, {tiny.CHECKS_PER_SHAPE} held-out prompts per shape, at most {tiny.MAX_STEPS} steps")
    reports: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as work:
        for seed in args.seeds:
            try:
                report = tiny.build_tiny_model(
                    Path(work) / f"seed-{seed}", REPO / "knowledge", REPO / "prompts", seed=seed,
                    progress=lambda line, seed=seed: print(f"  seed {seed}: {line}", flush=True),
                )  # fmt: skip
            except tiny.TinyModelError as err:
                print(f"seed {seed}: FAILED: {err}")
                reports.append({"seed": seed, "error": str(err)})
                continue
            reports.append(json.loads((Path(work) / f"seed-{seed}" / "checks.json").read_text()))
            print(f"seed {seed}: passed after {report.steps} steps in {report.seconds:.0f}s")
    shapes = [s["shape"] for s in next((r["shapes"] for r in reports if "shapes" in r), [])]
    print()
    print("| seed | result | steps | seconds | " + " | ".join(shapes) + " |")
    print("|---:|---|---:|---:|" + "---:|" * len(shapes))
    for r in reports:
        if "error" in r:
            print(f"| {r['seed']} | failed | | | " + " | ".join("" for _ in shapes) + " |")
            continue
        margins = " | ".join(f"{s['worst_margin']:.2f} ({s['passed']}/{s['prompts']})" for s in r["shapes"])
        print(f"| {r['seed']} | passed | {r['steps']} | {r['seconds']:.0f} | {margins} |")
    if args.json is not None:
        args.json.write_text(json.dumps({"machine": machine(), "seeds": reports}, indent=2), encoding="utf-8")
    return 1 if any("error" in r for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
