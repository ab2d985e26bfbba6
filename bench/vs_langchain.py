#!/usr/bin/env python3
"""This project's answer selection side by side with a plain LangChain + Chroma retriever.

The baseline is what teams usually start with: `langchain_chroma.Chroma` over the same texts (FAQ
questions and alternates, policy sections and sentences), embedded by the same all-MiniLM-L6-v2 (a
LangChain `Embeddings` over its own sentence-transformers model, which is what `HuggingFaceEmbeddings`
does; that package pins huggingface-hub below the version this project locks). It is asked
`similarity_search_with_relevance_scores` for the nearest text, whose item is the answer. It is shown
twice: answering everything (its ranking alone), and with the `score_threshold` of 0.5 that LangChain's
`similarity_score_threshold` retriever is commonly given. This project runs its real `ResponsePolicy`
(embedding, Chroma, hybrid scoring, calibrated threshold) on an index built by its real `KnowledgeIndex`.

Both run in one process, one torch thread, message by message in alternation, so the latencies are
comparable. Data sets: the demo (knowledge/ + evals/demo-cases.csv), and BANKING77 in the 10-shot
(seed 0) and the 10-held-out-intents (`oos`) settings of bench/banking77.py.

Usage: python bench/vs_langchain.py [--datasets demo,b77-10shot,b77-oos] [--data DIR] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import banking77  # bench/banking77.py: the same knowledge base and cases as the BANKING77 benchmark
from langchain_core.embeddings import Embeddings
from machine import machine, machine_line

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.config import AnsweringSettings  # noqa: E402
from bot.embedding import Embedder, bundled_model_path  # noqa: E402
from bot.evaluation import OUT_OF_SCOPE, load_cases  # noqa: E402
from bot.index import KnowledgeIndex  # noqa: E402
from bot.knowledge.loader import read_knowledge_dir  # noqa: E402
from bot.policy import ResponsePolicy  # noqa: E402

DATASETS = ("demo", "b77-10shot", "b77-oos")
BASELINE_THRESHOLD = 0.5
BATCH = 5000


class SentenceTransformerEmbeddings(Embeddings):
    """LangChain's `Embeddings` interface over a sentence-transformers model: what `HuggingFaceEmbeddings` does."""

    def __init__(self, path: Path) -> None:
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors = self._model.encode(texts, normalize_embeddings=True, show_progress_bar=False)
        return [[float(x) for x in v] for v in vectors]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


@dataclass
class Tally:
    predicted: list[str] = field(default_factory=list)
    ranked_first: list[str] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)

    def figures(self, expected: list[str]) -> dict[str, float]:
        in_scope = [i for i, e in enumerate(expected) if e != OUT_OF_SCOPE]
        oos = [i for i, e in enumerate(expected) if e == OUT_OF_SCOPE]
        declined = [i for i, p in enumerate(self.predicted) if p == OUT_OF_SCOPE]
        return {
            "top1_accuracy": _share(sum(p == e for p, e in zip(self.predicted, expected, strict=True)), len(expected)),
            "in_scope_accuracy": _share(sum(self.predicted[i] == expected[i] for i in in_scope), len(in_scope)),
            "closed_set_accuracy": _share(sum(self.ranked_first[i] == expected[i] for i in in_scope), len(in_scope)),
            "oos_recall": _share(sum(self.predicted[i] == OUT_OF_SCOPE for i in oos), len(oos)),
            "oos_precision": _share(sum(expected[i] == OUT_OF_SCOPE for i in declined), len(declined)),
            "latency_ms_p50": round(statistics.median(self.latency_ms), 2),
            "latency_ms_p95": round(statistics.quantiles(self.latency_ms, n=20)[-1], 2),
        }


def _share(n: int, d: int) -> float:
    return round(n / d, 4) if d else 0.0


def prepare(dataset: str, data: Path, work: Path) -> tuple[Path, Path]:
    """Knowledge directory and case file for a data set (BANKING77 ones written as bench/banking77.py does)."""
    if dataset == "demo":
        return REPO / "knowledge", REPO / "evals" / "demo-cases.csv"
    categories, train, test = banking77.load_data(data)
    ids = banking77.faq_ids(categories)
    setting, seed = ("10shot", 0) if dataset == "b77-10shot" else ("oos", None)
    knowledge = work / dataset / "knowledge"
    banking77.write_knowledge(knowledge, banking77.examples_for(setting, seed, categories, train), ids)
    cases = work / dataset / "cases.csv"
    held_out = frozenset(banking77.held_out_intents(categories)) if setting == "oos" else frozenset()
    banking77.write_cases(cases, test, ids, held_out)
    return knowledge, cases


def run(dataset: str, data: Path, work: Path, embedder: Embedder, baseline_embeddings: Embeddings) -> dict[str, object]:
    from langchain_chroma import Chroma

    knowledge, case_file = prepare(dataset, data, work)
    cases = load_cases(case_file)
    for folder in ("index", "baseline"):
        shutil.rmtree(work / dataset / folder, ignore_errors=True)

    started = time.perf_counter()
    index = KnowledgeIndex.open(work / dataset / "index", "knowledge", embedder)
    index.sync(read_knowledge_dir(knowledge))
    ours_prepare = time.perf_counter() - started
    policy = ResponsePolicy(index, AnsweringSettings(), "Talk to a person")

    texts = [(item_id, text) for item_id, item_texts in index.items().items() for text in item_texts]
    started = time.perf_counter()
    store = Chroma(
        collection_name=f"baseline-{dataset}",
        embedding_function=baseline_embeddings,
        persist_directory=str(work / dataset / "baseline"),
        collection_configuration={"hnsw": {"space": "cosine"}},
    )
    for start in range(0, len(texts), BATCH):  # Chroma refuses larger batches (about 5,400 records)
        batch = texts[start : start + BATCH]
        store.add_texts([t for _, t in batch], metadatas=[{"item_id": i} for i, _ in batch])
    baseline_prepare = time.perf_counter() - started

    ours, plain, thresholded = Tally(), Tally(), Tally()
    for case in cases:
        started = time.perf_counter()
        decision = policy.decide(case.text)
        ours.latency_ms.append((time.perf_counter() - started) * 1000)
        ours.predicted.append(decision.answer.item_id if decision.answer else OUT_OF_SCOPE)
        ours.ranked_first.append(decision.candidates[0].item_id if decision.candidates else OUT_OF_SCOPE)

        started = time.perf_counter()
        found = store.similarity_search_with_relevance_scores(case.text, k=1)
        elapsed = (time.perf_counter() - started) * 1000
        item, score = (str(found[0][0].metadata["item_id"]), found[0][1]) if found else (OUT_OF_SCOPE, 0.0)
        for tally, answer in ((plain, item), (thresholded, item if score >= BASELINE_THRESHOLD else OUT_OF_SCOPE)):
            tally.latency_ms.append(elapsed)
            tally.predicted.append(answer)
            tally.ranked_first.append(item)

    expected = [c.expected for c in cases]
    return {
        "dataset": dataset,
        "n_cases": len(cases),
        "n_oos": sum(e == OUT_OF_SCOPE for e in expected),
        "texts": len(texts),
        "calibration": index.calibration.summary(),
        "systems": {
            "this project": {**ours.figures(expected), "prepare_s": round(ours_prepare, 1)},
            "LangChain + Chroma, answer all": {**plain.figures(expected), "prepare_s": round(baseline_prepare, 1)},
            f"LangChain + Chroma, score >= {BASELINE_THRESHOLD}": {
                **thresholded.figures(expected),
                "prepare_s": round(baseline_prepare, 1),
            },
        },
    }


def table(results: list[dict[str, object]]) -> str:
    head = ("data set", "system", "top-1", "in-scope", "closed-set", "OOS R", "OOS P", "p50 ms", "p95 ms", "prepare s")
    rows = [head]
    for result in results:
        systems = result["systems"]
        assert isinstance(systems, dict)
        for name, f in systems.items():
            rows.append(
                (
                    str(result["dataset"]),
                    name,
                    f"{f['top1_accuracy']:.2%}",
                    f"{f['in_scope_accuracy']:.2%}",
                    f"{f['closed_set_accuracy']:.2%}",
                    f"{f['oos_recall']:.2%}" if result["n_oos"] else "-",
                    f"{f['oos_precision']:.2%}" if result["n_oos"] else "-",
                    f"{f['latency_ms_p50']:.1f}",
                    f"{f['latency_ms_p95']:.1f}",
                    f"{f['prepare_s']:.1f}",
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--data", type=Path, default=banking77.DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=REPO / ".data" / "bench" / "vs-langchain")
    args = parser.parse_args()
    datasets = [d for d in args.datasets.split(",") if d]
    if unknown := set(datasets) - set(DATASETS):
        parser.error(f"unknown data sets {sorted(unknown)}; choose from {','.join(DATASETS)}")

    info = machine()
    print(f"machine: {machine_line(info)}", flush=True)
    embedder = Embedder(threads=1)
    embedder.load()  # sets torch to one thread for both systems
    baseline_embeddings = SentenceTransformerEmbeddings(bundled_model_path())
    results = []
    for dataset in datasets:
        print(f"running {dataset} ...", flush=True)
        results.append(run(dataset, args.data.resolve(), args.work.resolve(), embedder, baseline_embeddings))
        print(f"  this project: {results[-1]['calibration']}", flush=True)

    print(f"\nmachine: {machine_line(info)}")
    print(table(results))
    args.work.mkdir(parents=True, exist_ok=True)
    out = args.work / "results.json"
    payload = {"created": datetime.now(UTC).isoformat(timespec="seconds"), "machine": info, "results": results}
    out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
