"""Offline labels and label-driven text search on a real report store: the IU X-ray reports.

What it measures, on the 3,927 Indiana University chest X-ray reports (findings + impression, embedded
with the bundled MiniLM, 384-d; the expert MeSH terms are ground truth only: the store's provenance
lists ``mesh_major`` and ``normal`` under ``label_exclude``, so no label is ever made from them):

1. an SAE trained with the package defaults (what ``sae train WORKSPACE`` picks: n from the rows,
   k=32 unless ``--k``, the automatic schedule), encoded; an existing run with the same config is reused;
2. every feature labeled offline by ``MetadataLabeler`` (report phrases that >= 50% of a feature's
   items share, negation-aware) and scored by the offline embedding judge: labeled / unexplained /
   dead shares, duplicate and collision rates, detection against random held-out items (mean and
   median) and against sibling features' items, each beside the labels summary's baselines (the same
   labels shuffled among features; a random SAE labeled and scored the same way), seconds per stage;
3. 20 labeled features drawn at random (seeded), each with its label, the coverage of each term and
   its three strongest reports (first 220 characters), for a human to judge; the 10 most common
   labels and the 10 most common label terms (to show duplicates and generic terms honestly);
4. retrieval against MeSH: reports split by a seeded hash of their id into a dev and a test half.
   Queries are chosen on the dev half only: every MeSH major heading (qualifiers dropped) with >= 25
   dev reports, lower-cased as the query ("Pleural Effusion" -> "pleural effusion"; "No Indexing" is
   not a finding and is skipped), plus "normal chest" (MeSH normal) and "A without B" for the three
   most frequent headings A and the heading B most often indexed with A on dev (relevant: A and not
   B; kept when >= 25 dev reports qualify).
   Scored on test-half items only (all items ranked, dev items dropped from the ranking): AP@100 and
   P@10 of (a) ``Searcher(run).search`` (the product's text search: the embedding planner over the
   labels, with its default radiology thesaurus) and (b) dense retrieval (MiniLM cosine between the
   query and every report's embedding), beside the P@10 of a random ranking (the test prevalence).
   A query the SAE search cannot plan (SaeError: no label matches) counts as AP 0 and P@10 0.

Writes ``artifacts/benchmarks/labels_iu.{json,md}`` and prints the markdown.

    pip download --no-deps torchxrayvision -d /tmp/txv     # once: the reports ship in this wheel (never install it)
    OMP_NUM_THREADS=2 python benchmarks/labels_iu.py --reports /tmp/txv      # ~10 min on 2 cores the first time
    python benchmarks/labels_iu.py --reports /tmp/txv --k 16 --workspace artifacts/iu-xray
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sae.datasets.iu_xray import make_iu_xray_store, mesh_terms  # noqa: E402
from sae.errors import SaeError  # noqa: E402
from sae.interpret import EvidenceBuilder, MetadataLabeler, label_run  # noqa: E402
from sae.interpret.labelers import OK  # noqa: E402
from sae.interpret.phrases import stem, text_phrases  # noqa: E402
from sae.models import SAEConfig  # noqa: E402
from sae.pipeline import encode_run, run_folder, run_name, train_run  # noqa: E402
from sae.run import Run, Workspace  # noqa: E402
from sae.search.evaluate import average_precision, precision_at  # noqa: E402
from sae.search.searcher import Searcher  # noqa: E402
from sae.train import TrainConfig  # noqa: E402
from sae.train.plan import default_n_latents, latents_note, plan_schedule, training_rows  # noqa: E402

OUT = ROOT / "artifacts" / "benchmarks"
GROUND_TRUTH = ("mesh_major", "normal")
CLI_DEFAULT_K = 32
"""``sae train``'s default ``--k`` (sae/cli/common.py ``add_sae_args``)."""
MIN_DEV = 25
NOT_FINDINGS = ("normal", "no indexing")
"""MeSH values that are not findings: ``normal`` has its own query; ``No Indexing`` marks an unindexed report."""
SNIPPET = 220


def code_state() -> dict:
    """The commit, whether the package differs from it, and a digest of every ``sae/**/*.py`` as read now
    (the package is edited while benchmarks run: the digest ties the numbers to one version of the code)."""
    import subprocess

    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    h = hashlib.sha256()
    for f in sorted((ROOT / "sae").rglob("*.py")):
        h.update(str(f.relative_to(ROOT)).encode() + b"\0" + f.read_bytes())
    return {"commit": git("rev-parse", "HEAD"), "sae_changed_vs_commit": bool(git("status", "--porcelain", "--", "sae")),
            "sae_sources_sha256": h.hexdigest()[:16]}


# -- stages ------------------------------------------------------------------------------------
def get_store(ws: Workspace, reports: str | None) -> tuple[object, dict]:
    """The workspace's store, built with ``make_iu_xray_store`` unless a current one is there
    (a store whose provenance does not exclude the MeSH columns from labels is rebuilt)."""
    if (ws.store_path / "zarr.json").exists():
        store = ws.open_store()
        excluded = set(store.provenance.get("label_exclude", []))
        if set(GROUND_TRUTH) <= excluded:
            return store, {"store": "reused", "store_s": None}
        print(f"{ws.store_path} does not list {GROUND_TRUTH} under label_exclude: rebuilding it", flush=True)
    if reports is None:
        raise SystemExit(f"no current store in {ws.path}: give --reports (the torchxrayvision wheel or a folder; "
                         "pip download --no-deps torchxrayvision -d DIR)")
    ws.path.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    store = make_iu_xray_store(ws.store_path, reports, overwrite=True, progress=False)
    return store, {"store": "built", "store_s": time.perf_counter() - t0}


def get_run(ws: Workspace, store, k: int | None, n: int | None) -> tuple[Run, dict]:
    """The SAE the CLI's defaults describe (``sae train WS [--k K]``), trained unless a run of that config exists."""
    train_cfg = TrainConfig()
    k = k or CLI_DEFAULT_K
    n_train = training_rows(store.n_rows, train_cfg.holdout_frac)
    n_latents = n or default_n_latents(n_train, store.dim, k)
    sae_cfg = SAEConfig(d_in=store.dim, n_latents=n_latents, k=k)
    notes = ([] if n else [latents_note(n_latents, n_train, store.dim)]) + list(plan_schedule(train_cfg, n_train, n_latents).notes)
    folder = run_folder(ws, run_name(sae_cfg, train_cfg))
    info = {"run": folder.name, "notes": notes}
    if (folder / "config.json").exists():
        run = Run(ws, folder)
        try:
            run.store  # noqa: B018  refuses a run trained on another version of the store
            fresh = False
        except SaeError as e:
            print(f"existing run {folder.name} is stale ({e}): retraining", flush=True)
            fresh = True
        if not fresh:
            if run.status()["codes"] != "ok":
                t0 = time.perf_counter()
                encode_run(run, progress=False)
                info["encode_s_now"] = time.perf_counter() - t0
            info["trained"] = "reused"
            return run.refresh(), info
    print(f"training {folder.name} ({'; '.join(notes)})", flush=True)
    t0 = time.perf_counter()
    run = train_run(ws, sae_cfg, train_cfg, overwrite=folder.exists(), progress=False, notes=notes)
    info["trained"] = "now"
    info["train_run_s"] = time.perf_counter() - t0
    return run, info


def term_key(term: str) -> str:
    """A label term as the key ``text_phrases`` gives it (stemmed words; a negated term keeps its ``no``)."""
    return " ".join(stem(w) for w in str(term).split())


def terms_in(text: str, terms: list[str]) -> list[bool]:
    """Per label term, whether the report's own phrases (negation-aware, as the labeler reads it) include it."""
    keys = set(text_phrases(text))
    return [term_key(t) in keys for t in terms]


def top3_check(run: Run, labels) -> dict:
    """Over every labeled feature: the share of its 3 strongest reports that carry every label term / at least one."""
    ok = labels.frame[labels.frame["status"] == OK]
    every, some = [], []
    for f, ts in zip(ok["feature"].astype(int), ok["terms"]):
        rows, _ = run.postings.top(int(f), 3)
        for text in run.store.texts(rows):
            hit = terms_in(str(text), _list(ts))
            every.append(all(hit))
            some.append(any(hit))
    return {"top3_every_term": float(np.mean(every)) if every else None, "top3_some_term": float(np.mean(some)) if some else None,
            "reports": len(every)}


def _list(v) -> list:
    return [] if v is None or (isinstance(v, float) and np.isnan(v)) else list(v)


def label_stats(labels) -> dict:
    s, frame = labels.summary, labels.frame
    n = max(1, s["features"])
    base = s.get("baselines", {})
    rand = base.get("random_sae", {})
    shuf = base.get("shuffled_labels", {})
    rand_unexplained = None
    if "features" in rand:
        rand_unexplained = (rand["features"] - rand["labeled"] - rand.get("dead", 0)) / max(1, rand["features"])
    ok = frame[frame["status"] == OK]
    return {
        "features": s["features"], "labeled": s.get(OK, 0), "unexplained": s.get("unexplained", 0), "dead": s.get("dead", 0),
        "labeled_share": s.get(OK, 0) / n, "unexplained_share": s.get("unexplained", 0) / n, "dead_share": s.get("dead", 0) / n,
        "duplicate_rate": s.get("duplicate_rate"), "collision_rate": s.get("collision_rate"),
        "detection": s.get("detection"), "detection_median": s.get("detection_median"), "detection_sibling": s.get("detection_sibling"),
        "detection_sibling_median": float(ok["detection_sibling"].median()) if "detection_sibling" in ok and ok["detection_sibling"].notna().any() else None,
        "detection_sibling_scored": int(ok["detection_sibling"].notna().sum()) if "detection_sibling" in ok else 0,
        "intruder": s.get("intruder"), "min_term_coverage": s.get("min_term_coverage"),
        "terms_per_label": float(np.mean([len(_list(t)) for t in ok["terms"]])) if len(ok) else None,
        "negated_term_share": float(np.mean([str(t).startswith("no ") for ts in ok["terms"] for t in _list(ts)])) if len(ok) else None,
        "shuffled": {k: shuf.get(k) for k in ("detection", "detection_sibling", "derangement", "same_label_share")},
        "random_sae": {**{k: rand.get(k) for k in ("features", "labeled", "labeled_share", "dead", "duplicate_rate", "collision_rate",
                                                      "detection", "detection_sibling", "k", "seconds")},
                       "unexplained_share": rand_unexplained, "dead_share": rand.get("dead", 0) / max(1, rand.get("features", 1))},
        "confidence": float(ok["confidence"].mean()) if len(ok) else None,
        "metadata_agreement": s.get("metadata_agreement"), "contradictions": s.get("contradictions"),
        "contradictions_inside_negated_terms": _negated_contradictions(ok),
        "chance": s.get("chance"),
    }


def _negated_contradictions(ok: pd.DataFrame) -> int | None:
    """Contradiction flags whose every flagged word sits inside one of the label's own ``no ...`` terms (the
    check reads the words of a negated term as affirmed: see the report)."""
    if "contradiction" not in ok:
        return None
    import re

    n = 0
    for text, ts in zip(ok["contradiction"].astype(str), ok["terms"]):
        words = re.findall(r"label says '([^']+)'", text)
        neg = [t for t in _list(ts) if str(t).startswith("no ")]
        n += bool(words) and all(any(f" {w} " in f" {t} " for t in neg) for w in words)
    return n


def sample_features(run: Run, labels, n: int, seed: int) -> list[dict]:
    ok = labels.frame[labels.frame["status"] == OK].sort_values("feature")
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(ok["feature"].to_numpy(), min(n, len(ok)), replace=False))
    stats = run.stats
    out = []
    for f in picks:
        row = ok[ok["feature"] == f].iloc[0]
        rows, vals = run.postings.top(int(f), 3)
        texts = run.store.texts(rows)
        terms = [str(t) for t in _list(row["terms"])]
        out.append({"feature": int(f), "label": str(row["label"]), "confidence": _num(row.get("confidence")),
                    "terms": terms, "coverage": [float(c) for c in _list(row["coverage"])],
                    "fires_on": float(stats.loc[int(f), "count"]) / run.store.n_rows,
                    "detection": _num(row.get("detection")), "detection_sibling": _num(row.get("detection_sibling")),
                    "top": [{"id": str(run.meta["id"].iloc[int(r)]), "activation": float(v), "text": str(t)[:SNIPPET],
                             "terms_present": terms_in(str(t), terms)}
                            for r, v, t in zip(rows, vals, texts)]})
    return out


def _num(v):
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)


def common(labels, top: int = 10) -> dict:
    ok = labels.frame[labels.frame["status"] == OK]
    lab = Counter(str(x) for x in ok["label"])
    terms = Counter(str(t) for ts in ok["terms"] for t in _list(ts))
    return {"labels": lab.most_common(top), "terms": terms.most_common(top), "distinct_labels": len(lab), "distinct_terms": len(terms)}


def split_dev(ids: pd.Series, seed: int) -> np.ndarray:
    """True for dev-half items: the parity of a seeded SHA-256 of the report id."""
    return np.array([int(hashlib.sha256(f"{seed}:{i}".encode()).hexdigest(), 16) % 2 == 0 for i in ids.astype(str)], bool)


def choose_queries(meta: pd.DataFrame, dev: np.ndarray) -> list[dict]:
    """Queries picked on the dev half only (see the module docstring); ``relevant`` is over every row."""
    terms = mesh_terms(meta)
    normal = meta["normal"].to_numpy(bool)
    counts = Counter(t for i in np.flatnonzero(dev) for t in terms[i])
    heads = sorted((h for h, c in counts.items() if c >= MIN_DEV and h not in NOT_FINDINGS), key=lambda h: (-counts[h], h))
    has = {h: np.array([h in t for t in terms], bool) for h in counts}
    cases = [{"query": h, "kind": "heading", "relevant": has[h]} for h in heads]
    if int(normal[dev].sum()) >= MIN_DEV:
        cases.append({"query": "normal chest", "kind": "negation (MeSH normal)", "relevant": normal})
    for a in heads[:3]:
        co = Counter(t for i in np.flatnonzero(dev & has[a]) for t in terms[i] if t != a and t not in NOT_FINDINGS)
        if not co:
            continue
        b = co.most_common(1)[0][0]
        rel = has[a] & ~has[b]
        if int(rel[dev].sum()) >= MIN_DEV:
            cases.append({"query": f"{a} without {b}", "kind": "negation (A, not B)", "relevant": rel})
    for c in cases:
        c["dev_relevant"] = int(c["relevant"][dev].sum())
    return cases


def retrieval(run: Run, cases: list[dict], dev: np.ndarray) -> tuple[list[dict], dict]:
    from sae.encoders import MiniLMEncoder

    test = ~dev
    n = run.store.n_rows
    t0 = time.perf_counter()
    searcher = Searcher(run)
    setup_sae = time.perf_counter() - t0
    t0 = time.perf_counter()
    encoder = MiniLMEncoder()
    x = np.asarray(run.store.read_embeddings(), dtype=np.float32)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    q = np.asarray(encoder.encode([c["query"] for c in cases], progress=False), dtype=np.float32)
    q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    setup_dense = time.perf_counter() - t0
    rows, sae_s, dense_s = [], 0.0, 0.0
    for c, qv in zip(cases, q):
        rel = c["relevant"] & test
        t0 = time.perf_counter()
        err, plan = "", []
        try:
            res = searcher.search(c["query"], top=n)
            ranked = res.hits["row"].to_numpy(np.int64)
            plan = [{"feature": int(k.feature), "label": k.label, "negated": bool(k.negated), "match": round(float(k.match), 3), "phrase": k.phrase}
                    for k in res.plan.concepts]
            notes = list(res.plan.notes) + list(res.notes)
        except SaeError as e:
            ranked, err, notes = np.zeros(0, np.int64), str(e), []
        sae_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        sims = x @ qv
        dense_rank = np.lexsort((np.arange(n), -sims))
        dense_s += time.perf_counter() - t0
        sae_test, dense_test = ranked[test[ranked]], dense_rank[test[dense_rank]]
        rows.append({"query": c["query"], "kind": c["kind"], "dev_relevant": c["dev_relevant"], "test_relevant": int(rel.sum()),
                     "test_items": int(test.sum()), "prevalence": float(rel.sum() / test.sum()),
                     "sae_ap@100": average_precision(sae_test, rel, 100), "sae_p@10": precision_at(sae_test, rel, 10),
                     "sae_ranked_test": int(len(sae_test)), "sae_error": err, "sae_plan": plan, "sae_notes": notes,
                     "dense_ap@100": average_precision(dense_test, rel, 100), "dense_p@10": precision_at(dense_test, rel, 10)})
    timing = {"sae_searcher_setup_s": setup_sae, "sae_queries_s": sae_s, "dense_setup_s": setup_dense, "dense_queries_s": dense_s}
    return rows, timing


def means(rows: list[dict], kinds: tuple[str, ...] | None = None) -> dict:
    sub = [r for r in rows if kinds is None or r["kind"] in kinds]
    keys = ("sae_ap@100", "sae_p@10", "dense_ap@100", "dense_p@10", "prevalence")
    return {"queries": len(sub), "sae_unplanned": sum(bool(r["sae_error"]) for r in sub),
            **{k: float(np.mean([r[k] for r in sub])) if sub else float("nan") for k in keys}}


# -- report ------------------------------------------------------------------------------------
def _f(v, fmt="{:.3f}") -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else fmt.format(v)


def _pct(v) -> str:
    return _f(v, "{:.1%}")


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(doc: dict) -> str:
    st, tr, ls, sec = doc["store"], doc["train"], doc["labels"], doc["seconds"]
    rs, sh = ls["random_sae"], ls["shuffled"]
    L = [f"# Offline labels and text search on the IU X-ray reports ({st['rows']:,} reports, MiniLM {st['dim']}-d)", "",
         f"SAE `{tr['run']}` ({tr['trained']}): {tr['arch']}, n={tr['n_latents']:,}, k={tr['k']}, {tr['steps']:,} steps "
         f"({tr['stopped']}); held-out R2 {_f(tr['r2'])} (random SAE {_f(tr['random_r2'])}), L0 {_f(tr['l0'], '{:.1f}')}. "
         f"Plan: {'; '.join(tr['notes'])}.", "",
         "MeSH terms (`mesh_major`, `normal`) are ground truth only: the store's provenance lists them under `label_exclude`, "
         "so every label below comes from the report text alone.", "",
         "## Labels (MetadataLabeler on the report phrases, offline embedding judge)", "",
         "| metric | this SAE | shuffled labels | random SAE | chance |", "|---|---|---|---|---|",
         f"| features | {ls['features']:,} | {_f(sh.get('features') or ls['labeled'], '{:,}')} | {_f(rs.get('features'), '{:,}')} | |",
         f"| labeled share | {_pct(ls['labeled_share'])} ({ls['labeled']:,}) | - | {_pct(rs.get('labeled_share'))} ({_f(rs.get('labeled'), '{:,}')}) | |",
         f"| unexplained share | {_pct(ls['unexplained_share'])} ({ls['unexplained']:,}) | - | {_pct(rs.get('unexplained_share'))} | |",
         f"| dead share | {_pct(ls['dead_share'])} ({ls['dead']:,}) | - | {_pct(rs.get('dead_share'))} | |",
         f"| duplicate rate (labeled) | {_pct(ls['duplicate_rate'])} | - | {_pct(rs.get('duplicate_rate'))} | |",
         f"| collision rate (labeled) | {_pct(ls['collision_rate'])} | - | {_pct(rs.get('collision_rate'))} | |",
         f"| detection vs random items, mean | {_f(ls['detection'])} | {_f(sh.get('detection'))} | {_f(rs.get('detection'))} | 0.5 |",
         f"| detection vs random items, median | {_f(ls['detection_median'])} | - | - | 0.5 |",
         f"| detection vs siblings' items, mean | {_f(ls['detection_sibling'])} ({ls['detection_sibling_scored']:,} scored) | "
         f"{_f(sh.get('detection_sibling'))} | {_f(rs.get('detection_sibling'))} | 0.5 |",
         f"| detection vs siblings' items, median | {_f(ls['detection_sibling_median'])} | - | - | 0.5 |",
         f"| intruder (coherence, no label) | {_f(ls['intruder'])} | - | - | 0.2 |",
         f"| top-20 reports carrying every label term (labeler's confidence), mean | {_pct(ls['confidence'])} | - | - | |",
         f"| top-3 reports carrying every label term | {_pct(doc['top3']['top3_every_term'])} | - | - | |",
         f"| top-3 reports carrying at least one label term | {_pct(doc['top3']['top3_some_term'])} | - | - | |",
         f"| contradiction flags (of which inside the label's own `no ...` terms) | {ls['contradictions']} "
         f"({ls['contradictions_inside_negated_terms']}) | - | - | |", "",
         f"Terms per label {_f(ls['terms_per_label'], '{:.2f}')}; {_pct(ls['negated_term_share'])} of label terms are negated "
         f"phrases (`no ...`); the least-covered named term covers {_pct(ls['min_term_coverage'])} of its feature's items. "
         f"Shuffled labels: the same labels permuted among the labeled features ({sh.get('derangement')} derangement), scored on the "
         f"same held-out items. Random SAE: an untrained dictionary of the same size (k={rs.get('k')}) labeled and scored the same way.",
         "", "### Most common labels and label terms", "",
         f"{doc['common']['distinct_labels']:,} distinct labels and {doc['common']['distinct_terms']:,} distinct terms over "
         f"{ls['labeled']:,} labeled features.", "",
         "| # | label | features | term | labels using it |", "|---|---|---|---|---|"]
    cl, ct = doc["common"]["labels"], doc["common"]["terms"]
    for i in range(max(len(cl), len(ct))):
        a = cl[i] if i < len(cl) else ("", "")
        b = ct[i] if i < len(ct) else ("", "")
        L.append(f"| {i + 1} | {_cell(a[0])} | {a[1]} | {_cell(b[0])} | {b[1]} |")
    L += ["", f"### {len(doc['sample'])} labeled features drawn at random (seed {doc['seed']})", "",
          "Coverage: share of the feature's active items whose report has the term. Top reports: the three strongest "
          f"activations, first {SNIPPET} characters; [k/n]: how many of the label's n terms the whole report carries "
          "(its own phrases, negation-aware, as the labeler reads it).", ""]
    for s in doc["sample"]:
        cov = ", ".join(f"`{t}` {c:.0%}" for t, c in zip(s["terms"], s["coverage"]))
        L.append(f"**#{s['feature']} \"{s['label']}\"**: {cov}; fires on {s['fires_on']:.1%} of reports; top 20 carrying every "
                 f"term {_pct(s['confidence'])}; detection {_f(s['detection'], '{:.2f}')}, vs siblings {_f(s['detection_sibling'], '{:.2f}')}")
        L.append("")
        for j, t in enumerate(s["top"], 1):
            L.append(f"{j}. [{sum(t['terms_present'])}/{len(t['terms_present'])}] ({t['id']}) {_cell(t['text'])}")
        L.append("")
    r = doc["retrieval"]
    L += ["## Retrieval against MeSH (test half only)", "",
          f"Dev/test split by a seeded hash of the report id (seed {doc['seed']}): {r['dev_items']:,} dev, {r['test_items']:,} test "
          f"reports. Queries chosen on dev: MeSH major headings with >= {MIN_DEV} dev reports (qualifiers dropped, lower-cased; "
          "`no indexing` skipped), `normal chest` (MeSH normal) and `A without B` for the three most frequent headings. All items ranked, dev items dropped, "
          "then AP@100 and P@10 on test. SAE search: `Searcher(run).search(query)` (embedding planner over the labels, default "
          "radiology thesaurus); dense: MiniLM cosine of the query to the report embeddings; random: the expected P@10 of a "
          "random ranking (test prevalence). A query the SAE search cannot plan scores 0.", "",
          "| queries | n | SAE search mAP@100 | dense mAP@100 | SAE search P@10 | dense P@10 | random P@10 | SAE unplanned |",
          "|---|---|---|---|---|---|---|---|"]
    for name, m in r["means"].items():
        L.append(f"| {name} | {m['queries']} | {_f(m['sae_ap@100'])} | {_f(m['dense_ap@100'])} | {_f(m['sae_p@10'])} | {_f(m['dense_p@10'])} | "
                 f"{_f(m['prevalence'])} | {m['sae_unplanned']} |")
    L += ["", "| query | kind | dev n | test n | SAE AP@100 | dense AP@100 | SAE P@10 | dense P@10 | random P@10 | SAE plan (best matched labels) |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for q in r["queries"]:
        if q["sae_error"]:
            plan = "not planned: " + _cell(q["sae_error"][:160])
        else:
            plan = "; ".join(f"{'NOT ' if c['negated'] else ''}#{c['feature']} {_cell(c['label'])} ({c['match']:.2f})" for c in q["sae_plan"][:3])
            plan += f" (+{len(q['sae_plan']) - 3} more)" if len(q["sae_plan"]) > 3 else ""
        L.append(f"| {_cell(q['query'])} | {q['kind']} | {q['dev_relevant']} | {q['test_relevant']} | {_f(q['sae_ap@100'])} | "
                 f"{_f(q['dense_ap@100'])} | {_f(q['sae_p@10'], '{:.1f}')} | {_f(q['dense_p@10'], '{:.1f}')} | {_f(q['prevalence'])} | {plan} |")
    L += ["", "## Seconds per stage", "", "| stage | seconds |", "|---|---|"]
    for k, v in sec.items():
        L.append(f"| {k} | {_f(v, '{:.1f}') if not isinstance(v, str) else v} |")
    c = doc["code"]
    L += ["", f"Machine: {doc['machine']}. Code: commit {c['commit'][:10]}"
          f"{' with uncommitted changes to sae/' if c['sae_changed_vs_commit'] else ''}, sae/ sources digest {c['sae_sources_sha256']}"
          f"{'; ' + c['note'] if c['note'] else ''}.", ""]
    return "\n".join(L)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reports", help="the torchxrayvision wheel, NLMCXR_reports.tgz or a folder holding either (needed to build the store)")
    ap.add_argument("--workspace", type=Path, default=ROOT / "artifacts" / "iu-xray", help="built once, reused (default artifacts/iu-xray)")
    ap.add_argument("--k", type=int, default=None, help=f"active latents per row (default {CLI_DEFAULT_K}, as `sae train`)")
    ap.add_argument("--n", type=int, default=None, help="dictionary size (default: chosen from the rows, as `sae train`)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the feature sample and the dev/test split")
    ap.add_argument("--sample", type=int, default=20, help="labeled features shown with their reports")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    t_all = time.perf_counter()
    code = code_state()
    ws = Workspace(args.workspace)
    store, store_info = get_store(ws, args.reports)
    print(f"store: {store.n_rows:,} x {store.dim} ({store_info['store']})", flush=True)
    run, run_info = get_run(ws, store, args.k, args.n)
    cfg, m = run.config, run.metrics()
    secs = m.get("seconds", {})
    print(f"SAE {run.name} ({run_info['trained']}): R2 {m.get('reconstruction', {}).get('r2', float('nan')):.3f}", flush=True)

    t0 = time.perf_counter()
    EvidenceBuilder.of(run, progress=False)  # the run keeps it: label_run reuses this one (same config)
    evidence_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    labels = label_run(run, MetadataLabeler(), progress=False)
    label_s = time.perf_counter() - t0
    print(f"labeled {labels.summary.get(OK, 0):,} of {labels.summary['features']:,} features in {label_s:.0f} s", flush=True)
    lstats = label_stats(labels)
    sample = sample_features(run, labels, args.sample, args.seed)
    top3 = top3_check(run, labels)

    dev = split_dev(run.meta["id"], args.seed)
    cases = choose_queries(run.meta, dev)
    print(f"{len(cases)} queries chosen on {int(dev.sum()):,} dev reports; evaluating on {int((~dev).sum()):,} test reports", flush=True)
    rows, rtiming = retrieval(run, cases, dev)
    retrieval_doc = {"dev_items": int(dev.sum()), "test_items": int((~dev).sum()), "min_dev": MIN_DEV, "queries": rows,
                     "means": {"all": means(rows), "MeSH headings": means(rows, ("heading",)),
                               "negation": means(rows, ("negation (MeSH normal)", "negation (A, not B)"))}}

    seconds = {"store build": store_info["store_s"] if store_info["store"] == "built" else "reused",
               "train (this process)" if run_info["trained"] == "now" else "train (when the run was made)": secs.get("train"),
               "encode": secs.get("encode"), "evaluate (quick)": secs.get("evaluate"),
               "evidence (report phrases, enrichment, siblings)": evidence_s,
               "label + score + baselines (label_run, evidence built)": label_s, "  of which the random-SAE baseline": lstats["random_sae"].get("seconds"),
               "search: Searcher setup (planner embeds the labels)": rtiming["sae_searcher_setup_s"],
               f"search: {len(rows)} SAE queries": rtiming["sae_queries_s"],
               "dense: encoder load + embeddings + query embedding": rtiming["dense_setup_s"],
               f"dense: {len(rows)} queries": rtiming["dense_queries_s"], "whole benchmark": time.perf_counter() - t_all}
    base_r2 = m.get("baselines", {}).get("random_sae", {}).get("reconstruction", {}).get("r2")
    doc = {"store": {"path": str(ws.store_path), "rows": store.n_rows, "dim": store.dim, "encoder": store.encoder,
                     "label_exclude": store.provenance.get("label_exclude")},
           "train": {"run": run.name, "trained": run_info["trained"], "arch": cfg.get("arch"), "n_latents": cfg.get("n_latents"),
                     "k": cfg.get("k"), "steps": cfg.get("steps", 0), "stopped": cfg.get("stopped", "step cap"), "notes": run_info["notes"],
                     "r2": m.get("reconstruction", {}).get("r2"), "random_r2": base_r2, "l0": m.get("reconstruction", {}).get("l0")},
           "labels": lstats, "labels_summary": labels.summary, "common": common(labels), "top3": top3, "seed": args.seed, "sample": sample,
           "retrieval": retrieval_doc, "seconds": seconds,
           "machine": f"{platform.machine()}, {platform.system()}, Python {platform.python_version()}"}
    end = code_state()["sae_sources_sha256"]
    code["note"] = ("" if end == code["sae_sources_sha256"] else
                    f"sae/ sources changed while this ran (digest {end} at the end); modules imported at the start were measured")
    doc["code"] = code
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "labels_iu.json").write_text(json.dumps(doc, indent=2, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    md = markdown(doc)
    (args.out / "labels_iu.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
