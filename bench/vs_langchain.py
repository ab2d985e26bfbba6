#!/usr/bin/env python3
"""This project's answer selection side by side with a plain LangChain + Chroma retriever.

Both sides get the same knowledge and the same rule for declining; they differ only in how they rank
and how they place their threshold.

Same knowledge. The baseline is `langchain_chroma.Chroma` (cosine space) over exactly the texts this
project embeds for the same knowledge directory: FAQ questions and alternates, policy passages (whole
section, each sentence, and the customers' questions a section lists) and the out-of-scope groups'
examples, each stored with its item id and kind. They are embedded by the same all-MiniLM-L6-v2 (a
LangChain `Embeddings` over its own sentence-transformers model, which is what `HuggingFaceEmbeddings`
does; that package pins huggingface-hub below the version this project locks). For each message it
asks `similarity_search_with_relevance_scores(k=1)`, timed; the nearest text's item is its pick and
the relevance score (1 - cosine distance, i.e. the cosine) its score. This project runs its real
`ResponsePolicy` with default `answering` settings (`threshold: auto`, `min_margin: 0`) over an index
built by its real `KnowledgeIndex` (Chroma, hybrid scoring: the two best texts, item centroid, BM25, a
classifier and a passage bonus; calibration). Its calibration also reads the FAQ answers (to measure
the passage bonus); nothing else the baseline lacks.

Same decline rule. This project declines a message whose best-ranked item is an out-of-scope group,
at any score (the group declines it above the threshold; below it the bot is unsure, which `bot eval`
also counts as `out_of_scope`), and a message that is one of the examples word for word (the baseline
finds those at cosine 1.0). So every baseline row declines when the nearest text is an out-of-scope
example, whatever its score. (The demo lists no out-of-scope `names`, so that rule of the project's
never acts here. Small talk, a request for a person and invalid input are decided before retrieval and
count as declines, as in `bot eval`; the results count how many cases that was, and the exact-title
and exact-example lookups.)

Same treatment of a threshold. This project's threshold is calibrated from the knowledge base alone
(`bot/retrieval/ranking/calibration.py`: 3 draws of 4 folds hide phrasings, which should still find their item,
and whole items and out-of-scope examples, whose phrasings should be declined; among the thresholds that
lose at most 1 point of the former's correct answers, the one with the best 0.8 answered + 0.2 declined).
The baseline is shown three ways:

  answer all        no threshold: the nearest text's item answers unless it is an out-of-scope example;
  score >= 0.5      the `score_threshold` LangChain's `similarity_score_threshold` retriever is commonly
                    given, fixed, not calibrated;
  calibrated        its threshold on the relevance score chosen by the same procedure, with the same
                    folds (the project's `assign_folds`, seed 0), the same constants and the same
                    objective, over its own nearest-text score (no weights to choose); `prepare s` for
                    this row includes that calibration.

Figures per system: top-1 (declines count; a decline is right only for an `out_of_scope` case),
in-scope accuracy, closed-set (in-scope cases whose first-ranked *answerable* item is right, declines
and out-of-scope examples ignored; for the baseline an untimed second query filtered to answerable
texts when the nearest is an out-of-scope example), out-of-scope recall and precision, per-message
latency (embedding included) and preparation time (index build with embedding, plus calibration).

Both run in one process, one torch thread, message by message in alternation, so the latencies are
comparable within a run. Chroma's HNSW search is approximate and built with several threads, so a near
tie for the baseline's nearest text can come out differently between runs (a case now and then).

Data sets: the demo knowledge base (knowledge/) with each of its case files
(`demo`: evals/demo-cases.csv, `demo-holdout`: evals/demo-holdout.csv, `demo-third-party`:
evals/third-party-mentions.csv), and BANKING77 in the 10-shot (seed 0) and the 10-held-out-intents
(`oos`) settings of bench/banking77.py (no out-of-scope examples there: only thresholds decline).

Usage: python bench/vs_langchain.py [--datasets demo,demo-holdout,demo-third-party,b77-10shot,b77-oos]
                                    [--data DIR] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import banking77_data  # bench/banking77_data.py: the same knowledge base and cases as the BANKING77 benchmark
from langchain_core.embeddings import Embeddings
from machine import machine, machine_line

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.answering.policy import DecisionKind, ResponsePolicy  # noqa: E402
from bot.config import AnsweringSettings  # noqa: E402
from bot.evaluation.scoring import OUT_OF_SCOPE, load_cases  # noqa: E402
from bot.knowledge.loader import read_knowledge_dir  # noqa: E402
from bot.knowledge.model import OUT_OF_SCOPE_KIND  # noqa: E402
from bot.retrieval.embedding import Embedder, bundled_model_path  # noqa: E402
from bot.retrieval.index import KnowledgeIndex  # noqa: E402
from bot.retrieval.ranking import calibration  # noqa: E402

DEMO_CASES = {
    "demo": "demo-cases.csv",
    "demo-holdout": "demo-holdout.csv",
    "demo-third-party": "third-party-mentions.csv",
}
DATASETS = (*DEMO_CASES, "b77-10shot", "b77-oos")
BASELINE_THRESHOLD = 0.5
BATCH = 5000
OURS = "this project"
ANSWER_ALL = "LangChain + Chroma, answer all"
FIXED = f"LangChain + Chroma, score >= {BASELINE_THRESHOLD}"
CALIBRATED = "LangChain + Chroma, calibrated threshold"


class SentenceTransformerEmbeddings(Embeddings):
    """LangChain's `Embeddings` interface over a sentence-transformers model: what `HuggingFaceEmbeddings` does.

    It keeps the document vectors it computed, so the baseline's calibration reuses its own embeddings.
    """

    def __init__(self, path: Path) -> None:
        from sentence_transformers import SentenceTransformer

        self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        self.documents: dict[str, np.ndarray] = {}

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors = self._model.encode(texts, normalize_embeddings=True, show_progress_bar=False)
        self.documents.update(zip(texts, np.asarray(vectors, dtype=np.float32), strict=True))
        return [[float(x) for x in v] for v in vectors]

    def embed_query(self, text: str) -> list[float]:
        vector = self._model.encode([text], normalize_embeddings=True, show_progress_bar=False)[0]
        return [float(x) for x in vector]


@dataclass(frozen=True)
class BaselineText:
    item_id: str
    kind: str  # "faq" | "passage" | "out_of_scope", as this project's index has it
    text: str


@dataclass(frozen=True)
class NearestCalibration:
    threshold: float
    calibrated: bool
    answered_correctly: float = 0.0
    declined: float = 0.0
    held_out: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        if not self.calibrated:
            return f"threshold {self.threshold:.3f} (too little knowledge to calibrate from)"
        return (
            f"threshold {self.threshold:.3f} on the nearest text's cosine; hidden phrasings answered correctly "
            f"{self.answered_correctly:.1%}, unanswerable phrasings declined {self.declined:.1%} "
            f"({self.held_out} phrasings held out, {self.seconds:.1f}s)"
        )


def calibrate_nearest(texts: Sequence[BaselineText], vectors: np.ndarray, seed: int = 0) -> NearestCalibration:
    """The baseline's threshold by this project's procedure (bot/retrieval/ranking/calibration.py), for its one score.

    `texts` in this project's calibration order (each item's lead text first), `vectors` (texts, dim) unit
    rows. Same folds, fold-leak rule, probes, item weighting, constants and objective; the score of a
    message is the cosine of its nearest kept text, and -inf (declined at any threshold) when that text is
    an out-of-scope example.
    """
    started = time.perf_counter()
    by_item = calibration.text_positions(texts)  # reads only .item_id
    groups = {t.item_id for t in texts if t.kind == OUT_OF_SCOPE_KIND}
    answerable_items = [item for item in by_item if item not in groups]
    held_out = sum(len(by_item[item]) - 1 for item in answerable_items)
    if len(answerable_items) < calibration.MIN_ITEMS or held_out < calibration.MIN_HELD_OUT:
        return NearestCalibration(BASELINE_THRESHOLD, calibrated=False)
    owners = np.array([t.item_id for t in texts], dtype=object)
    is_group = np.array([t.kind == OUT_OF_SCOPE_KIND for t in texts], dtype=bool)
    leads = {positions[0] for positions in by_item.values()}

    def at(positions: list[int]) -> np.ndarray:
        return np.array(positions, dtype=np.intp)

    def nearest(queries: np.ndarray, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each query's best cosine among `kept` (-inf where an out-of-scope example is nearest) and that text."""
        if len(queries) == 0 or len(kept) == 0:
            return np.full(len(queries), -np.inf), np.zeros(len(queries), dtype=np.intp)
        similarities = vectors[queries] @ vectors[kept].T
        best = kept[similarities.argmax(axis=1)]
        top = np.where(is_group[best], -np.inf, similarities.max(axis=1))
        return top, best

    answerable_top: list[np.ndarray] = []
    answerable_correct: list[np.ndarray] = []
    answerable_owners: list[str] = []
    unanswerable_top: list[np.ndarray] = []
    unanswerable_owners: list[str] = []
    for repeat in range(calibration.REPEATS):
        text_fold, item_fold = calibration.assign_folds(by_item, np.random.default_rng(seed + repeat))
        for fold in range(calibration.FOLDS):
            # Hidden phrasings should still find their item; a hidden passage sentence also hides its
            # passage's whole-section text, which contains it word for word.
            everything = range(len(texts))
            hidden = at([i for i in everything if text_fold.get(i) == fold])
            leaking = {texts[i].item_id for i in hidden if texts[i].kind == "passage"}
            kept = at(
                [i for i in everything if text_fold.get(i) != fold and not (i in leads and texts[i].item_id in leaking)]
            )
            top, best = nearest(hidden, kept)
            from_group = is_group[hidden]  # a hidden out-of-scope example is a message to decline
            answerable_top.append(top[~from_group])
            answerable_correct.append(owners[best[~from_group]] == owners[hidden[~from_group]])
            answerable_owners.extend(owners[hidden[~from_group]].tolist())
            unanswerable_top.append(top[from_group])
            unanswerable_owners.extend(owners[hidden[from_group]].tolist())
            # Hidden items are asked about with their phrasings (their only text when they have just one).
            asked = at(
                [
                    i
                    for i in everything
                    if item_fold[texts[i].item_id] == fold and (i in text_fold or len(by_item[texts[i].item_id]) == 1)
                ]
            )
            remaining = at([i for i in everything if item_fold[texts[i].item_id] != fold])
            top, _ = nearest(asked, remaining)
            unanswerable_top.append(top)
            unanswerable_owners.extend(owners[asked].tolist())

    top = np.concatenate(answerable_top)
    correct = np.concatenate(answerable_correct).astype(bool)
    weight = calibration._item_weights(answerable_owners)
    correct_top, correct_weight = top[correct], weight[correct]
    declined_top = np.concatenate(unanswerable_top)
    declined_weight = calibration._item_weights(unanswerable_owners)
    candidates = np.unique(np.concatenate([correct_top, declined_top]))
    candidates = candidates[np.isfinite(candidates)]
    if len(candidates) == 0:
        return NearestCalibration(BASELINE_THRESHOLD, calibrated=False, seconds=time.perf_counter() - started)
    answered = calibration._mass_at_or_above(correct_top, correct_weight, candidates)
    declined = 1 - calibration._mass_at_or_above(declined_top, declined_weight, candidates)
    objective = (1 - calibration.UNANSWERABLE_SHARE) * answered + calibration.UNANSWERABLE_SHARE * declined
    objective = np.where(answered >= answered[0] - calibration.MAX_ANSWERED_DROP, objective, -1.0)
    pick = int(np.argmax(objective))
    return NearestCalibration(
        threshold=round(float(candidates[pick]), 4),
        calibrated=True,
        answered_correctly=float(answered[pick]),
        declined=float(declined[pick]),
        held_out=held_out,
        seconds=time.perf_counter() - started,
    )


@dataclass
class Tally:
    predicted: list[str] = field(default_factory=list)
    ranked_first: list[str] = field(default_factory=list)  # first-ranked answerable item
    latency_ms: list[float] = field(default_factory=list)

    def figures(self, expected: list[str]) -> dict[str, float]:
        in_scope = [i for i, e in enumerate(expected) if e != OUT_OF_SCOPE]
        oos = [i for i, e in enumerate(expected) if e == OUT_OF_SCOPE]
        declined = [i for i, p in enumerate(self.predicted) if p == OUT_OF_SCOPE]
        return {
            "top1_correct": sum(p == e for p, e in zip(self.predicted, expected, strict=True)),
            "top1_accuracy": _share(sum(p == e for p, e in zip(self.predicted, expected, strict=True)), len(expected)),
            "in_scope_accuracy": _share(sum(self.predicted[i] == expected[i] for i in in_scope), len(in_scope)),
            "closed_set_accuracy": _share(sum(self.ranked_first[i] == expected[i] for i in in_scope), len(in_scope)),
            "oos_recall": _share(sum(self.predicted[i] == OUT_OF_SCOPE for i in oos), len(oos)),
            "oos_precision": _share(sum(expected[i] == OUT_OF_SCOPE for i in declined), len(declined)),
            "declined": len(declined),
            "latency_ms_p50": round(statistics.median(self.latency_ms), 2),
            "latency_ms_p95": round(statistics.quantiles(self.latency_ms, n=20)[-1], 2),
        }


def _share(n: int, d: int) -> float:
    return round(n / d, 4) if d else 0.0


def prepare(dataset: str, data: Path, work: Path) -> tuple[Path, Path]:
    """Knowledge directory and case file for a data set (BANKING77 ones written as bench/banking77.py does)."""
    if dataset in DEMO_CASES:
        return REPO / "knowledge", REPO / "evals" / DEMO_CASES[dataset]
    categories, train, test = banking77_data.load_data(data)
    ids = banking77_data.faq_ids(categories)
    setting, seed = ("10shot", 0) if dataset == "b77-10shot" else ("oos", None)
    knowledge = work / dataset / "knowledge"
    banking77_data.write_knowledge(knowledge, banking77_data.examples_for(setting, seed, categories, train), ids)
    cases = work / dataset / "cases.csv"
    held_out = frozenset(banking77_data.held_out_intents(categories)) if setting == "oos" else frozenset()
    banking77_data.write_cases(cases, test, ids, held_out)
    return knowledge, cases


def run(
    dataset: str, data: Path, work: Path, embedder: Embedder, baseline_embeddings: SentenceTransformerEmbeddings
) -> dict[str, object]:
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

    # Every text this project embeds, in its calibration order (each item's lead text first).
    texts = [BaselineText(t.item_id, t.kind, t.text) for t in index._calibration_texts()]
    started = time.perf_counter()
    store = Chroma(
        collection_name=f"baseline-{dataset}",
        embedding_function=baseline_embeddings,
        persist_directory=str(work / dataset / "baseline"),
        collection_configuration={"hnsw": {"space": "cosine"}},
    )
    for start in range(0, len(texts), BATCH):  # Chroma refuses larger batches (about 5,400 records)
        batch = texts[start : start + BATCH]
        store.add_texts(
            [t.text for t in batch],
            metadatas=[{"item_id": t.item_id, "out_of_scope": t.kind == OUT_OF_SCOPE_KIND} for t in batch],
        )
    baseline_prepare = time.perf_counter() - started
    vectors = np.array([baseline_embeddings.documents[t.text] for t in texts], dtype=np.float32)
    baseline_calibration = calibrate_nearest(texts, vectors)

    ours, plain, fixed, calibrated = Tally(), Tally(), Tally(), Tally()
    decided = {"before retrieval": 0, "exact title": 0, "exact out-of-scope example": 0}
    for case in cases:
        started = time.perf_counter()
        decision = policy.decide(case.text)
        ours.latency_ms.append((time.perf_counter() - started) * 1000)
        ours.predicted.append(
            decision.answer.item_id if decision.kind is DecisionKind.ANSWER and decision.answer else OUT_OF_SCOPE
        )
        ours.ranked_first.append(decision.candidates[0].item_id if decision.candidates else OUT_OF_SCOPE)
        if decision.kind in (DecisionKind.SMALLTALK, DecisionKind.HANDOFF, DecisionKind.INVALID):
            decided["before retrieval"] += 1
        elif index.ranking.out_of_scope_example(decision.text) is not None:
            decided["exact out-of-scope example"] += 1
        elif index.ranking.item_titled(decision.text) is not None:
            decided["exact title"] += 1

        started = time.perf_counter()
        found = store.similarity_search_with_relevance_scores(case.text, k=1)
        elapsed = (time.perf_counter() - started) * 1000
        if found:
            document, score = found[0]
            item, excluded = str(document.metadata["item_id"]), bool(document.metadata["out_of_scope"])
        else:
            item, excluded, score = OUT_OF_SCOPE, True, 0.0
        first = item
        if excluded:  # for closed-set only, untimed: the nearest answerable text
            answerable = store.similarity_search_with_relevance_scores(case.text, k=1, filter={"out_of_scope": False})
            first = str(answerable[0][0].metadata["item_id"]) if answerable else OUT_OF_SCOPE
        for tally, threshold in (
            (plain, -np.inf),
            (fixed, BASELINE_THRESHOLD),
            (calibrated, baseline_calibration.threshold),
        ):
            tally.latency_ms.append(elapsed)
            tally.predicted.append(OUT_OF_SCOPE if excluded or score < threshold else item)
            tally.ranked_first.append(first)

    expected = [c.expected for c in cases]
    calibrated_prepare = baseline_prepare + baseline_calibration.seconds
    return {
        "dataset": dataset,
        "cases": str(case_file.relative_to(REPO) if case_file.is_relative_to(REPO) else case_file),
        "n_cases": len(cases),
        "n_oos": sum(e == OUT_OF_SCOPE for e in expected),
        "texts": len(texts),
        "out_of_scope_examples": sum(t.kind == OUT_OF_SCOPE_KIND for t in texts),
        "this_project_decided_without_ranking": decided,
        "calibration": index.calibration.summary(),
        "baseline_calibration": baseline_calibration.summary(),
        "systems": {
            OURS: {**ours.figures(expected), "prepare_s": round(ours_prepare, 1)},
            ANSWER_ALL: {**plain.figures(expected), "prepare_s": round(baseline_prepare, 1)},
            FIXED: {**fixed.figures(expected), "prepare_s": round(baseline_prepare, 1)},
            CALIBRATED: {
                **calibrated.figures(expected),
                "threshold": baseline_calibration.threshold,
                "prepare_s": round(calibrated_prepare, 1),
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
                    f"{f['top1_correct']} = {f['top1_accuracy']:.2%}",
                    f"{f['in_scope_accuracy']:.2%}",
                    f"{f['closed_set_accuracy']:.2%}",
                    f"{f['oos_recall']:.2%}" if result["n_oos"] else "-",
                    f"{f['oos_precision']:.2%}" if result["n_oos"] and f["declined"] else "-",
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
    parser.add_argument("--data", type=Path, default=banking77_data.DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=REPO / ".data" / "bench" / "vs-langchain")
    args = parser.parse_args()
    datasets = [d for d in args.datasets.split(",") if d]
    if unknown := set(datasets) - set(DATASETS):
        parser.error(f"unknown data sets {sorted(unknown)}; choose from {','.join(DATASETS)}")

    # A text identical to the message scores 1.0000003 in float32; LangChain warns, the score is fine.
    warnings.filterwarnings("ignore", message="Relevance scores must be between 0 and 1")
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
        print(f"  baseline: {results[-1]['baseline_calibration']}", flush=True)
        print(f"  this project decided without ranking: {results[-1]['this_project_decided_without_ranking']}")

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
