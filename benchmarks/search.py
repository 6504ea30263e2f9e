"""Search benchmark: retrieval quality against ground truth, and latency at 1e6 items.

    python benchmarks/search.py                     # all parts (needs `sae demo` and benchmarks/search_prepare.py)
    python benchmarks/search.py --parts demo planted
    python benchmarks/search.py --parts latency     # the 1e6-item workspace from search_prepare.py

* demo: metadata-ground-truth queries on the MNI demo (single / pair / triple / negation, three
  paraphrases each): P@10 and mAP@100 for the embedding planner (with and without the radiology
  thesaurus) and SAIL's method (3 features, cosine) re-implemented as the baseline; composed queries
  ("like this slice, but with <artifact>") vs the text alone and the example alone.
* planted: queries naming planted concepts in three forms (the name, "<name> present", "scan showing
  <name>") over offline metadata labels: mAP against the rows where the concept is revealed.
* llm: the LLM planner through the local SmolLM2-135M-Instruct server (sae.llm_local, xllamacpp), next
  to the embedding planner on the same queries (not part of the default run: minutes per query batch).
* latency: 1e6 planted items, SAE n=8192 k=32: p50/p95 of a 3-concept plan, a planner-sized plan
  (3 OR-groups of 8 features), a fingerprint query, next to a FAISS flat (and NumPy) dense scan.
* iu: the IU X-ray reports (artifacts/iu-xray, benchmarks/labels_iu.py): per MeSH major heading with
  >= 25 dev reports, the heading itself and two lay queries (benchmarks/iu_queries.json, one for tuning,
  "dev", one "held_out"), ranked over all reports and scored on the test half (labels_iu.py's split):
  concept search, hybrid search (when Searcher.search takes ``mode``), SAIL's method and MiniLM dense.
* suites: the paraphrase suites of sae.search.suites (directions, "A or B", attributes, negations) on
  the demo: concept search and SAIL's method, P@10 / mAP@100 per kind and per query.
* heldout: the held-out paraphrases of benchmarks/demo_heldout_queries.json (written after the planner,
  never used to tune it) on the demo with its metadata labels, scored like ``suites``.

suites and heldout also count, per query and kind, the concept plan's contradicting OR-group members:
positive concepts whose label asserts the opposite pole of their phrase (sae.search.lexicon; not counted
where the planner has no lexicon) or names another region than the query asks for. The goal is 0.
"""

from __future__ import annotations

import argparse
import inspect
import json
import platform
import re
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from sae.errors import SaeError  # noqa: E402
from sae.pipeline import Run  # noqa: E402
from sae.run import Workspace  # noqa: E402
from sae.search.baseline import SAILBaseline  # noqa: E402
from sae.search.evaluate import DEMO_VOCABULARY, QueryCase, average_precision, evaluate_methods, metadata_cases, precision_at, summarize  # noqa: E402
from sae.search.example import DenseIndex, ExamplePlanner  # noqa: E402
from sae.search.index import ConceptIndex  # noqa: E402
from sae.search.plan import Concept, QueryPlan  # noqa: E402
from sae.search.planner import EmbeddingPlanner  # noqa: E402
from sae.search.searcher import Searcher  # noqa: E402
from sae.search.suites import suite_cases  # noqa: E402

OUT = ROOT / "artifacts" / "benchmarks"


def _ranked(searcher_or_index, planner, depth=100):
    def rank(q: str) -> np.ndarray:
        return searcher_or_index.search(planner.plan(q), top=depth).hits["row"].to_numpy()
    return rank


def part_demo(ws_path: Path) -> dict:
    s = Searcher(Run.find(Workspace(ws_path)))
    plain = EmbeddingPlanner(s.labels.mapping(), encoder=s.planner.encoder, thesaurus=None)
    methods = {"embedding planner": _ranked(s.index, s.planner), "embedding planner, no thesaurus": _ranked(s.index, plain),
               "SAIL baseline (3 features, cosine)": SAILBaseline(s.index, s.planner).rank,
               "SAIL baseline, no thesaurus": SAILBaseline(s.index, plain).rank}
    cases = metadata_cases(DEMO_VOCABULARY, s.meta)
    t0 = time.perf_counter()
    res = evaluate_methods(methods, cases, s.meta)
    table = summarize(res)
    plan_ms = [_time_ms(lambda c=c: s.planner.plan(c.text)) for c in cases[:60]]
    return {"queries": len(cases), "seconds": time.perf_counter() - t0, "summary": table.to_dict("records"),
            "composed": _composed(s), "by_example": _by_example(s), "plan_ms_p50": float(np.median(plan_ms)),
            "worst": res[res["method"] == "embedding planner"].nsmallest(8, "ap@100")[["kind", "query", "p@10", "ap@100"]].to_dict("records")}


def _composed(s: Searcher, n_examples: int = 12, seed: int = 0) -> list[dict]:
    """'like this slice, but with <artifact>': relevant = same orientation and region, that artifact."""
    rng = np.random.default_rng(seed)
    m = s.meta
    clean = np.flatnonzero((m["artifact"] == "none").to_numpy())
    out = []
    for art in ["motion", "ghosting", "spike", "bias_field", "noise", "blur"]:
        word = DEMO_VOCABULARY["artifact"][art][0]
        scores = {"composed": [], "text only": [], "example only": []}
        for row in rng.choice(clean, n_examples, replace=False):
            rel = ((m["orientation"] == m["orientation"].iloc[row]) & (m["region"] == m["region"].iloc[row]) & (m["artifact"] == art)).to_numpy()
            if rel.sum() < 5:
                continue
            runs = {"composed": s.search(f"like this slice, but with {word}", top=10, like=int(row)),
                    "text only": s.search(word, top=10), "example only": s.search(None, top=10, like=int(row))}
            for k, r in runs.items():
                scores[k].append(precision_at(r.hits["row"].to_numpy(), rel, 10))
        out.append({"artifact": art, "examples": len(scores["composed"]), **{k: float(np.mean(v)) for k, v in scores.items()}})
    return out


def _by_example(s: Searcher, n: int = 60, seed: int = 0) -> dict:
    """Query by one example: relevant = same orientation, region and artifact; sparse fingerprint vs dense."""
    rng = np.random.default_rng(seed)
    m = s.meta
    key = (m["orientation"] + "/" + m["region"] + "/" + m["artifact"]).to_numpy()
    out = {"sparse top-8": [], "sparse top-16": [], "dense": [], "overlap": []}
    for row in rng.choice(len(m), n, replace=False):
        rel = key == key[row]
        rel[row] = False
        if rel.sum() < 10:
            continue
        sp8 = s.search(None, top=10, like=int(row)).hits["row"].to_numpy()
        sp16 = s.search(s.examples.plan([int(row)], top_k=16), top=10, like=int(row)).hits["row"].to_numpy()
        dn = s.dense().search([int(row)], top=10)
        out["sparse top-8"].append(precision_at(sp8, rel))
        out["sparse top-16"].append(precision_at(sp16, rel))
        out["dense"].append(precision_at(dn, rel))
        out["overlap"].append(len(np.intersect1d(sp8, dn)) / 10)
    return {"examples": len(out["dense"]), **{k: float(np.mean(v)) for k, v in out.items()}}


def part_llm(ws_path: Path, n_queries: int) -> dict:
    """The LLM planner with the local SmolLM2-135M-Instruct on the first paraphrase of each query kind."""
    import tempfile

    from sae.llm import LLMClient
    from sae.llm_local import LocalLLM
    from sae.search.llm_planner import LLMPlanner

    s = Searcher(Run.find(Workspace(ws_path)))
    cases = [c for c in metadata_cases(DEMO_VOCABULARY, s.meta) if c.paraphrase == 0 and c.kind in ("single", "pair", "negation")]
    cases = cases[:: max(len(cases) // n_queries, 1)][:n_queries]
    tmp = Path(tempfile.mkdtemp(prefix="sae-llm-plan-"))
    t0 = time.perf_counter()
    with LocalLLM(log_path=tmp / "server.log") as server:
        client = LLMClient(server.config(cache_dir=str(tmp / "llm"), max_tokens=300, timeout_s=120))
        llm = LLMPlanner(s.planner, client, candidates=24)
        methods = {"llm planner (smollm2-135m-instruct)": _ranked(s.index, llm), "embedding planner": _ranked(s.index, s.planner)}
        t1 = time.perf_counter()
        res = evaluate_methods(methods, cases, s.meta)
        seconds = time.perf_counter() - t1
    return {"queries": len(cases), "server_startup_s": t1 - t0, "seconds": seconds, "usage": client.usage(),
            "summary": summarize(res).to_dict("records")}


def part_planted(rows: int, seed: int = 0) -> dict:
    import tempfile

    from sae.datasets.planted import PlantedConfig, make_planted
    from sae.interpret import MetadataLabeler, label_run
    from sae.models import SAEConfig
    from sae.pipeline import train_run
    from sae.train import TrainConfig

    with tempfile.TemporaryDirectory(dir=OUT.parent) as tmp:
        ws = Workspace(Path(tmp) / "ws")
        ws.path.mkdir()
        store, truth = make_planted(ws.store_path, PlantedConfig(n_rows=rows, dim=256, n_concepts=256, n_revealed=48, seed=seed), progress=False)
        run = train_run(ws, SAEConfig(d_in=256, n_latents=512, k=16), TrainConfig(batch_size=512, epochs=8), evaluate=False, progress=False)
        labels = label_run(run, MetadataLabeler(), judge=None, progress=False)
        s = Searcher(run)
        meta = s.meta
        forms = {"name": "{}", "name present": "{} present", "scan showing name": "scan showing {}"}
        res = []
        for col, concepts in truth.revealed.items():
            for c in concepts:
                name = truth.names[c]
                rel = (meta[col] == name).to_numpy()
                if rel.sum() < 10:
                    continue
                for form, tpl in forms.items():
                    q = tpl.format(name)
                    try:
                        ranked = s.search(q, top=100).hits["row"].to_numpy()
                    except Exception as e:
                        ranked, err = np.zeros(0, np.int64), str(e)
                    else:
                        err = ""
                    res.append({"form": form, "concept": name, "n_relevant": int(rel.sum()), "ap@100": average_precision(ranked, rel),
                                "p@10": precision_at(ranked, rel), "refused": bool(err)})
        df = pd.DataFrame(res)
        summary = df.groupby("form").agg(queries=("concept", "size"), map100=("ap@100", "mean"), p10=("p@10", "mean"), refused=("refused", "sum"))
        return {"rows": rows, "labeled": int(labels.summary["ok"]), "summary": summary.reset_index().to_dict("records"),
                "overall_map": float(df["ap@100"].mean())}


IU_QUERIES = ROOT / "benchmarks" / "iu_queries.json"


def _rows(res) -> np.ndarray:
    """The ranked rows of a SearchResult."""
    return res.hits["row"].to_numpy(np.int64)


def _has_mode(searcher: Searcher) -> bool:
    """Whether ``Searcher.search`` takes ``mode`` (an unknown keyword would be read as a metadata filter)."""
    return "mode" in inspect.signature(searcher.search).parameters


def _dense_ranker(run: Run):
    """query -> every row, by MiniLM cosine between the query and the store embeddings (ties by row)."""
    from sae.encoders import MiniLMEncoder

    encoder = MiniLMEncoder()
    x = np.asarray(run.store.read_embeddings(), dtype=np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    order = np.arange(len(x))

    def rank(q: str) -> np.ndarray:
        v = np.asarray(encoder.encode([q], progress=False), dtype=np.float32)[0]
        return np.lexsort((order, -(x @ (v / max(float(np.linalg.norm(v)), 1e-12)))))
    return rank


def _iu_methods(run: Run, s: Searcher, n: int) -> tuple[dict, dict]:
    """Method name -> (query -> all rows ranked), and the methods not available (name -> why)."""
    sail = SAILBaseline(s.index, s.planner)
    methods = {"concept": lambda q: _rows(s.search(q, top=n))}
    missing = {}
    if _has_mode(s):
        methods["hybrid"] = lambda q: _rows(s.search(q, top=n, mode="hybrid"))
    else:
        missing["hybrid"] = "Searcher.search takes no `mode` keyword"
    methods["sail"] = lambda q: sail.rank(q, top=n)
    methods["dense"] = _dense_ranker(run)
    return methods, missing


def _iu_cases(meta: pd.DataFrame, dev: np.ndarray) -> tuple[list[dict], list[str]]:
    """Each heading chosen on dev (labels_iu.py) as its own query, then its lay forms; and headings lacking lay forms."""
    from labels_iu import choose_queries

    heads = [c["query"] for c in choose_queries(meta, dev) if c["kind"] == "heading"]
    lay = [q for q in json.loads(IU_QUERIES.read_text()) if q["heading"] in heads]
    cases = [{"heading": h, "query": h, "form": "heading", "split": "all"} for h in heads]
    cases += [{"heading": q["heading"], "query": q["query"], "form": "lay", "split": q["split"]} for q in lay]
    return cases, sorted(set(heads) - {q["heading"] for q in lay})


def _score_test(rank, query: str, rel: np.ndarray, test: np.ndarray) -> dict:
    """AP@100 and P@10 of one ranking of all rows with the dev rows dropped; a refusal (SaeError) scores 0."""
    try:
        ranked, err = np.asarray(rank(query), dtype=np.int64), ""
    except SaeError as e:
        ranked, err = np.zeros(0, np.int64), str(e)
    on_test = ranked[test[ranked]]
    return {"ap@100": average_precision(on_test, rel, 100), "p@10": precision_at(on_test, rel, 10), "error": err}


def _iu_rows(methods: dict, missing: dict, cases: list[dict], has: dict, test: np.ndarray) -> list[dict]:
    """One row per (method, case); hybrid raising TypeError (an older ``search`` signature) goes to ``missing`` instead."""
    rows = []
    for name, rank in methods.items():
        try:
            for c in cases:
                rel = has[c["heading"]] & test
                rows.append({"method": name, **c, "test_relevant": int(rel.sum()), "prevalence": float(rel.sum() / test.sum()),
                             **_score_test(rank, c["query"], rel, test)})
        except TypeError as e:
            if name != "hybrid":
                raise
            missing[name] = f"TypeError: {e}"
            rows = [r for r in rows if r["method"] != name]
    return rows


def _iu_summary(df: pd.DataFrame) -> list[dict]:
    """mAP@100 / P@10 / refused per method x form x split (lay forms also over both splits)."""
    both = pd.concat([df, df[df["form"] == "lay"].assign(split="both")])
    table = both.groupby(["method", "form", "split"], sort=False).agg(
        queries=("query", "size"), map100=("ap@100", "mean"), p10=("p@10", "mean"), random_p10=("prevalence", "mean"),
        refused=("error", lambda e: int((e != "").sum()))).reset_index()
    order = {m: i for i, m in enumerate(dict.fromkeys(df["method"]))}
    return table.sort_values("method", key=lambda m: m.map(order), kind="stable").to_dict("records")


def part_iu(ws_path: Path, seed: int = 0) -> dict:
    """Headings and lay queries on the IU X-ray reports, scored on the test half (see the module docstring)."""
    from labels_iu import split_dev

    from sae.datasets.iu_xray import mesh_terms

    t0 = time.perf_counter()
    run = Run.find(Workspace(ws_path))
    meta = run.meta
    dev = split_dev(meta["id"], seed)
    test = ~dev
    cases, no_lay = _iu_cases(meta, dev)
    terms = mesh_terms(meta)
    has = {h: np.array([h in t for t in terms], bool) for h in {c["heading"] for c in cases}}
    s = Searcher(run)
    methods, missing = _iu_methods(run, s, run.store.n_rows)
    rows = _iu_rows(methods, missing, cases, has, test)
    return {"run": run.name, "dev_items": int(dev.sum()), "test_items": int(test.sum()), "headings": len(has),
            "queries": len(cases), "not_available": missing, "headings_without_lay_queries": no_lay,
            "seconds": time.perf_counter() - t0, "summary": _iu_summary(pd.DataFrame(rows)), "per_query": rows}


HELDOUT_QUERIES = ROOT / "benchmarks" / "demo_heldout_queries.json"
REGION_VALUES = ("inferior", "superior", "anterior", "posterior", "lateral", "medial")
DIRECTION_AXES = {"vertical", "anteroposterior", "mediolateral"}
"""The lexicon's axes of the demo's region values."""
_REGION_WORD = re.compile(r"\b(" + "|".join(REGION_VALUES) + r")\b", re.I)


def _lexicon():
    """The planner's lexicon of opposites (sae.search.lexicon), or None where this code has none (an older planner)."""
    try:
        from sae.search.lexicon import Lexicon
    except ImportError:
        return None
    return Lexicon()


def _wanted_regions(case) -> frozenset[str]:
    """The region values a case asks for: its positive region, else (an "A or B" case) the regions of its
    alternatives when every alternative names one; empty when the case says no direction."""
    pos = {v for col, v in case.positive if col == "region" and v in REGION_VALUES}
    if pos:
        return frozenset(pos)
    per_group = [{v for col, v in g if col == "region" and v in REGION_VALUES} for g in getattr(case, "alternatives", ())]
    return frozenset().union(*per_group) if per_group and all(per_group) else frozenset()


def _contradictions(plan, case, lex) -> dict:
    """The plan's positive concepts (OR-group members) that contradict the query: the phrase and the label
    assert opposite poles (``lex``; None: not counted), or the label names another region than the case asks for
    (and how many of those came from a phrase that itself names a direction, by ``lex``)."""
    wanted = _wanted_regions(case)
    by_lexicon, by_region, direction_phrase = [], [], 0
    for c in (plan.concepts if plan is not None else ()):
        if c.negated:
            continue
        if lex is not None and lex.conflicts(lex.poles(c.phrase), lex.poles(c.label)):
            by_lexicon.append(f"{c.phrase} -> {c.label}")
        said = {w.lower() for w in _REGION_WORD.findall(c.label)}
        if wanted and said - wanted:
            by_region.append(f"{c.phrase} -> {c.label}")
            direction_phrase += lex is not None and bool(lex.poles(c.phrase).keys() & DIRECTION_AXES)
    return {"contradicting_lexicon": None if lex is None else len(by_lexicon), "wrong_region_label": len(by_region),
            "wrong_region_direction_phrase": None if lex is None else direction_phrase,
            "contradicting": by_lexicon + [f"[region] {x}" for x in by_region if x not in by_lexicon]}


def _evaluate_demo(s: Searcher, cases: list) -> dict:
    """Concept search and SAIL's method on ``cases``: P@10 / mAP@100 per kind and per query, and per query and
    kind the concept plan's contradicting OR-group members (see :func:`_contradictions`)."""
    sail = SAILBaseline(s.index, s.planner)
    plans: dict[str, object] = {}

    def concept(q: str) -> np.ndarray:
        res = s.search(q, top=100)
        plans[q] = res.plan
        return _rows(res)

    methods = {"concept": concept, "sail": lambda q: sail.rank(q, top=100)}
    lex = _lexicon()
    t0 = time.perf_counter()
    res = evaluate_methods(methods, cases, s.meta)
    seconds = time.perf_counter() - t0
    counts = {c.text: _contradictions(plans.get(c.text), c, lex) for c in cases}
    keys = ("contradicting_lexicon", "wrong_region_label", "wrong_region_direction_phrase", "contradicting")
    for k in keys:
        res[k] = [counts[q][k] if m == "concept" else None for m, q in zip(res["method"], res["query"])]
    summary = summarize(res)
    concept_rows = res[res["method"] == "concept"]
    for k in keys[:3]:
        if k != "wrong_region_label" and lex is None:
            summary[k] = None
            continue
        per_kind = {**concept_rows.groupby("kind")[k].sum().astype(int).to_dict(), "all": int(concept_rows[k].sum())}
        summary[k] = [per_kind.get(kind) if m == "concept" else None for m, kind in zip(summary["method"], summary["kind"])]
    summary = summary.astype(object).where(summary.notna(), None)
    return {"queries": len(cases), "seconds": seconds, "lexicon": lex is not None, "summary": summary.to_dict("records"),
            "per_query": res.astype(object).where(res.notna(), None).to_dict("records")}


def part_suites(ws_path: Path) -> dict:
    """The paraphrase suites (sae.search.suites) on the demo: concept search and SAIL's method."""
    return _evaluate_demo(Searcher(Run.find(Workspace(ws_path))), suite_cases())


def heldout_cases(path: Path = HELDOUT_QUERIES) -> list:
    """The held-out demo queries as cases: every pair of ``all_of``, one AND-group of ``any_of`` (when any), none of ``none_of``."""
    from sae.search.suites import AnyCase

    def pairs(xs) -> tuple:
        return tuple((str(col), str(val)) for col, val in xs)

    out = []
    for q in json.loads(path.read_text()):
        pos, neg = pairs(q["all_of"]), pairs(q["none_of"])
        if q["any_of"]:
            out.append(AnyCase(q["query"], q["kind"], tuple(pairs(g) for g in q["any_of"]), pos, neg))
        else:
            out.append(QueryCase(q["query"], q["kind"], pos, neg))
    return out


def part_heldout(ws_path: Path) -> dict:
    """The held-out paraphrases (benchmarks/demo_heldout_queries.json) on the demo, metadata labels."""
    return _evaluate_demo(Searcher(Run.find(Workspace(ws_path)), "metadata"), heldout_cases())


def _time_ms(fn) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def _pct(xs) -> dict:
    return {"p50_ms": float(np.percentile(xs, 50)), "p95_ms": float(np.percentile(xs, 95)), "n": len(xs)}


def part_latency(ws_path: Path, n_queries: int = 100, seed: int = 0) -> dict:
    prepared = json.loads((ws_path / "prepared.json").read_text())
    run = Run.find(Workspace(ws_path))
    store, codes = run.store, run.codes
    t0 = time.perf_counter()
    index = ConceptIndex(codes)
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(seed)
    df = np.diff(index._ptr)
    alive = np.flatnonzero(df > 0)
    # features drawn in proportion to how often they fire: what a query over real concepts meets
    pick = lambda n: rng.choice(alive, n, replace=False, p=df[alive] / df[alive].sum())
    three, grouped = [], []
    for _ in range(n_queries):
        a, b, c = pick(3)
        plan = QueryPlan("q", (Concept(int(a)), Concept(int(b)), Concept(int(c), negated=True)))
        three.append(_time_ms(lambda plan=plan: index.search(plan, top=10)))
        f = pick(24)
        gplan = QueryPlan("q", tuple(Concept(int(x), 1.0, i >= 16, group=i // 8) for i, x in enumerate(f)))
        grouped.append(_time_ms(lambda gplan=gplan: index.search(gplan, top=10)))
    examples = ExamplePlanner(index, codes)
    rows = rng.choice(codes.n_rows, n_queries, replace=False)
    fp8, fp32 = [], []
    for r in rows:
        fp8.append(_time_ms(lambda r=r: index.search(examples.plan([int(r)], top_k=8), top=10)))
        fp32.append(_time_ms(lambda r=r: index.search(examples.plan([int(r)], top_k=32), top=10)))
    t1 = time.perf_counter()
    dense = DenseIndex.from_store(store)
    dense_build = time.perf_counter() - t1
    faiss_ms = [_time_ms(lambda r=r: dense.search([int(r)], top=10)) for r in rows[:30]]
    overl = []
    for r in rows[:30]:
        a = index.search(examples.plan([int(r)], top_k=8), top=11).hits["row"].to_numpy()
        overl.append(len(np.intersect1d(a[a != r][:10], dense.search([int(r)], top=10))) / 10)
    np_dense = DenseIndex(dense.x, use_faiss=False) if dense.faiss is not None else dense
    numpy_ms = [_time_ms(lambda r=r: np_dense.search([int(r)], top=10)) for r in rows[:10]]
    return {"prepared": prepared, "index_build_s": build_s, "dense_build_s": dense_build, "faiss": dense.faiss is not None,
            "plan_3_concepts": _pct(three), "plan_3_or_groups_of_8": _pct(grouped), "fingerprint_top8": _pct(fp8),
            "fingerprint_top32": _pct(fp32), "dense_flat_faiss" if dense.faiss is not None else "dense_flat": _pct(faiss_ms),
            "dense_flat_numpy": _pct(numpy_ms), "fingerprint_vs_dense_overlap@10": float(np.mean(overl)),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def write(doc: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "search.json").write_text(json.dumps(doc, indent=2, default=float))
    lines = ["# Search benchmark", "", f"{doc['machine']}", ""]
    if "demo" in doc:
        d = doc["demo"]
        lines += [f"## Demo ({d['queries']} metadata-ground-truth queries, P@10 / mAP@100)", "",
                  "| method | kind | queries | P@10 | mAP@100 | refused |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['method']} | {r['kind']} | {r['queries']} | {r['p10']:.3f} | {r['map100']:.3f} | {r['refused']} |" for r in d["summary"]]
        lines += ["", f"Embedding planner: plan p50 {d['plan_ms_p50']:.1f} ms.", "",
                  "Composed queries ('like this slice, but with X'; relevant: same orientation and region, artifact X), P@10:", "",
                  "| artifact | examples | composed | text only | example only |", "|---|---|---|---|---|"]
        lines += [f"| {r['artifact']} | {r['examples']} | {r['composed']:.2f} | {r['text only']:.2f} | {r['example only']:.2f} |" for r in d["composed"]]
    if "demo" in doc and "by_example" in doc["demo"]:
        b = doc["demo"]["by_example"]
        lines += ["", f"Query by one example ({b['examples']} random items; relevant = same orientation, region and artifact), P@10: "
                  f"sparse fingerprint top-8 {b['sparse top-8']:.2f}, top-16 {b['sparse top-16']:.2f}, dense embedding cosine {b['dense']:.2f}; "
                  f"overlap of the top-10 lists {b['overlap']:.2f}."]
    if "llm" in doc:
        L = doc["llm"]
        lines += ["", f"## LLM planner ({L['queries']} queries, first paraphrase; local SmolLM2-135M-Instruct via xllamacpp, 2 cores)", "",
                  f"{L['seconds'] / max(L['queries'], 1):.1f} s per query; usage {L['usage']}.", "",
                  "| method | kind | queries | P@10 | mAP@100 | refused |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['method']} | {r['kind']} | {r['queries']} | {r['p10']:.3f} | {r['map100']:.3f} | {r['refused']} |" for r in L["summary"]]
    if "planted" in doc:
        p = doc["planted"]
        lines += ["", f"## Planted paraphrase queries ({p['rows']:,} rows, metadata labels)", "",
                  "| form | queries | mAP@100 | P@10 | refused |", "|---|---|---|---|---|"]
        lines += [f"| {r['form']} | {r['queries']} | {r['map100']:.3f} | {r['p10']:.3f} | {r['refused']} |" for r in p["summary"]]
    if "latency" in doc:
        lat = doc["latency"]
        pr = lat["prepared"]
        lines += ["", f"## Latency at {pr['rows']:,} items (SAE n={pr['n']}, k={pr['k']}, d={pr['dim']}), one process", "",
                  f"Index build (posting lists re-sorted by row, calibrated): {lat['index_build_s']:.1f} s; "
                  f"dense index build {lat['dense_build_s']:.1f} s; peak RSS {lat['peak_rss_gb']:.1f} GB.", "",
                  "| query | p50 ms | p95 ms | n |", "|---|---|---|---|"]
        for k, v in lat.items():
            if isinstance(v, dict) and "p50_ms" in v:
                lines.append(f"| {k} | {v['p50_ms']:.1f} | {v['p95_ms']:.1f} | {v['n']} |")
        lines += ["", f"Overlap@10 of fingerprint (top-8) and dense neighbours: {lat['fingerprint_vs_dense_overlap@10']:.2f}."]
    if "iu" in doc:
        lines += _md_iu(doc["iu"])
    if "suites" in doc:
        lines += _md_suites(doc["suites"])
    if "heldout" in doc:
        lines += _md_suites(doc["heldout"], "Held-out paraphrases on the demo (written after the planner, never used to tune it)",
                            "benchmarks/demo_heldout_queries.json, metadata labels")
    (OUT / "search.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _md_iu(d: dict) -> list[str]:
    """Markdown of the ``iu`` part: the summary per method x form x split, then one row per query."""
    na = "; ".join(f"{k}: {v}" for k, v in d["not_available"].items()) or "none"
    lines = ["", f"## IU X-ray: MeSH headings and lay queries ({d['headings']} headings, {d['queries']} queries, run {d['run']})", "",
             f"Ranked over all reports, dev items dropped, scored on the {d['test_items']:,} test reports (labels_iu.py's split; "
             f"lay queries of benchmarks/iu_queries.json, one `dev` and one `held_out` per heading). Not available: {na}.", "",
             "| method | form | split | queries | mAP@100 | P@10 | random P@10 | refused |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['form']} | {r['split']} | {r['queries']} | {r['map100']:.3f} | {r['p10']:.3f} | {r['random_p10']:.3f} | "
              f"{r['refused']} |" for r in d["summary"]]
    df = pd.DataFrame(d["per_query"])
    ms = list(dict.fromkeys(df["method"]))
    wide = df.pivot_table(index=["heading", "form", "split", "query"], columns="method", values="ap@100", sort=False)
    lines += ["", "AP@100 per query:", "", "| heading | form | split | query | " + " | ".join(ms) + " |", "|---|---|---|---|" + "---|" * len(ms)]
    lines += [f"| {h} | {f} | {sp} | {q} | " + " | ".join(f"{row[m]:.3f}" for m in ms) + " |" for (h, f, sp, q), row in wide.iterrows()]
    return lines


def _count(x) -> str:
    return "n/a" if x is None else str(int(x))


def _md_suites(d: dict, title: str = "Paraphrase suites on the demo", source: str = "sae.search.suites") -> list[str]:
    """Markdown of the ``suites`` (or ``heldout``) part: the summary per method and kind, then one row per query;
    the concept plan's contradicting OR-group members per kind and query (n/a: not counted)."""
    lines = ["", f"## {title} ({d['queries']} queries, {source}; P@10 / mAP@100)", "",
             "Contradicting OR-group members of the concept plan (goal 0): *lexicon*, a positive concept whose label asserts "
             "the opposite pole of its phrase (sae.search.lexicon); *wrong region*, one whose label names another region "
             "than the query asks for (*of which direction phrase*: its phrase itself names a direction, by the lexicon; the others are "
             "artifact or plane phrases whose label also mentions a region)."
             + ("" if d.get("lexicon", True) else " This planner has no lexicon: the lexicon counts are n/a."), "",
             "| method | kind | queries | P@10 | mAP@100 | refused | contradicting (lexicon) | wrong region label | of which direction phrase |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['kind']} | {r['queries']} | {r['p10']:.3f} | {r['map100']:.3f} | {r['refused']} | "
              f"{_count(r.get('contradicting_lexicon')) if r['method'] == 'concept' else ''} | "
              f"{_count(r.get('wrong_region_label')) if r['method'] == 'concept' else ''} | "
              f"{_count(r.get('wrong_region_direction_phrase')) if r['method'] == 'concept' else ''} |" for r in d["summary"]]
    df = pd.DataFrame(d["per_query"])
    ms = list(dict.fromkeys(df["method"]))
    wide = df.pivot_table(index=["kind", "query", "n_relevant"], columns="method", values=["p@10", "ap@100"], sort=False)
    concept = df[df["method"] == "concept"].set_index("query") if "concept" in ms else pd.DataFrame()

    def contra(q: str) -> str:
        if q not in concept.index:
            return " |  | "
        r = concept.loc[q]
        return " | ".join(_count(r.get(k)) for k in ("contradicting_lexicon", "wrong_region_label", "wrong_region_direction_phrase"))

    heads = [f"{m} P@10 | {m} AP@100" for m in ms] + ["contradicting (lexicon)", "wrong region", "of which direction phrase"]
    lines += ["", "| kind | query | relevant | " + " | ".join(heads) + " |",
              "|---|---|---|" + "---|---|" * len(ms) + "---|---|---|"]
    lines += [f"| {k} | {q} | {n} | " + " | ".join(f"{row[('p@10', m)]:.1f} | {row[('ap@100', m)]:.3f}" for m in ms) + f" | {contra(q)} |"
              for (k, q, n), row in wide.iterrows()]
    return lines


def main() -> None:
    global OUT
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", nargs="+", default=["demo", "planted", "latency", "iu", "suites", "heldout"],
                    choices=["demo", "planted", "latency", "llm", "iu", "suites", "heldout"])
    ap.add_argument("--llm-queries", type=int, default=24)
    ap.add_argument("--demo-workspace", type=Path, default=ROOT / "artifacts" / "demo")
    ap.add_argument("--iu-workspace", type=Path, default=ROOT / "artifacts" / "iu-xray")
    ap.add_argument("--latency-workspace", type=Path, default=ROOT / "artifacts" / "bench-search-1e6")
    ap.add_argument("--planted-rows", type=int, default=20_000)
    ap.add_argument("--out", type=Path, default=OUT, help="where search.json / search.md go (default artifacts/benchmarks)")
    a = ap.parse_args()
    OUT = a.out
    doc = {"machine": f"{platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}"}
    prev = OUT / "search.json"
    if prev.exists():
        doc = {**json.loads(prev.read_text()), **doc}
    parts = {"demo": lambda: part_demo(a.demo_workspace), "planted": lambda: part_planted(a.planted_rows),
             "latency": lambda: part_latency(a.latency_workspace), "llm": lambda: part_llm(a.demo_workspace, a.llm_queries),
             "iu": lambda: part_iu(a.iu_workspace), "suites": lambda: part_suites(a.demo_workspace),
             "heldout": lambda: part_heldout(a.demo_workspace)}
    for name, run_part in parts.items():  # in this order, whatever order --parts lists them in
        if name in a.parts:
            doc[name] = run_part()
    write(doc)


if __name__ == "__main__":
    main()
