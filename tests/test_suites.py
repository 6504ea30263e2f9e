"""The paraphrase suites (sae.search.suites) and the IU lay queries (benchmarks/iu_queries.json)."""

from __future__ import annotations

import itertools
import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sae.search.evaluate import DEMO_VOCABULARY, QueryCase
from sae.search.suites import ALL_SUITES, NEGATION_SUITE, OR_SUITE, AnyCase, suite_cases

REPO = Path(__file__).resolve().parents[1]
IU_QUERIES = REPO / "benchmarks" / "iu_queries.json"
DEMO = REPO / "artifacts" / "demo"
IU = REPO / "artifacts" / "iu-xray"


def _grid() -> pd.DataFrame:
    """Every (orientation, region, artifact, severity) combination the cases name, once each."""
    values: dict[str, set[str]] = {"orientation": {"axial"}, "region": {"mid"}, "artifact": {"none"}, "severity": {"none"}}
    for case in suite_cases():
        pairs = [*case.positive, *case.negative, *itertools.chain.from_iterable(getattr(case, "alternatives", ()))]
        for col, val in pairs:
            values[col].add(val)
    cols = sorted(values)
    return pd.DataFrame(list(itertools.product(*(sorted(values[c]) for c in cols))), columns=cols)


def test_every_case_runs_on_a_synthetic_table():
    grid = _grid()
    for case in suite_cases():
        mask = case.relevant(grid)
        assert mask.dtype == bool and mask.shape == (len(grid),)
        assert 0 < mask.sum() < len(grid), case.text


def test_suite_sizes_kinds_and_texts():
    sizes = {name: len(cases) for name, cases in ALL_SUITES.items()}
    assert sizes["direction"] >= 24 and sizes["or"] >= 8 and sizes["attribute"] >= 8 and sizes["negation"] >= 6
    per_region = Counter(dict(c.positive)["region"] for c in ALL_SUITES["direction"])
    assert all(per_region[r] >= 4 for r in ("inferior", "superior", "anterior", "posterior", "lateral", "medial"))
    kinds = {c.kind for c in suite_cases()}
    assert kinds == {"direction", "direction+artifact", "or", "attribute", "negation"}
    texts = [c.text for c in suite_cases()]
    assert len(set(texts)) == len(texts)


def test_no_case_reuses_a_demo_vocabulary_phrase():
    phrases = [p for values in DEMO_VOCABULARY.values() for ps in values.values() for p in ps]
    for case in suite_cases():
        hits = [p for p in phrases if re.search(rf"\b{re.escape(p)}\b", case.text, re.I)]
        assert not hits, (case.text, hits)


def test_any_case_is_an_or_inside_and_an_and_outside():
    meta = pd.DataFrame({"artifact": ["blur", "motion", "noise", "blur", "motion"],
                         "orientation": ["axial", "axial", "axial", "coronal", "coronal"]})
    case = AnyCase("blur or motion in axial", "or", ((("artifact", "blur"),), (("artifact", "motion"),)), (("orientation", "axial"),))
    assert case.relevant(meta).tolist() == [True, True, False, False, False]
    grouped = AnyCase("blur in axial or motion in coronal", "or",
                      ((("artifact", "blur"), ("orientation", "axial")), (("artifact", "motion"), ("orientation", "coronal"))))
    assert grouped.relevant(meta).tolist() == [True, False, False, False, True]
    negated = AnyCase("blur or motion, not coronal", "or", ((("artifact", "blur"),), (("artifact", "motion"),)),
                      negative=(("orientation", "coronal"),))
    assert negated.relevant(meta).tolist() == case.relevant(meta).tolist()
    with pytest.raises(ValueError):
        AnyCase("nothing", "or", ())


def test_or_and_negation_suites_use_their_forms():
    assert all(isinstance(c, AnyCase) and len(c.alternatives) >= 2 and c.kind == "or" for c in OR_SUITE)
    assert all(isinstance(c, QueryCase) and c.kind == "negation" for c in NEGATION_SUITE)
    assert all(c.negative or ("artifact", "none") in c.positive for c in NEGATION_SUITE)


@pytest.mark.skipif(not (DEMO / "store.zarr").exists(), reason="the demo store is not built (sae demo)")
def test_every_case_has_ten_relevant_demo_rows():
    from sae.run import Run, Workspace

    meta = Run.find(Workspace(DEMO)).meta
    few = {c.text: int(c.relevant(meta).sum()) for c in suite_cases() if c.relevant(meta).sum() < 10}
    assert not few


def _iu_queries() -> list[dict]:
    return json.loads(IU_QUERIES.read_text())


def test_iu_queries_two_per_heading_one_dev_one_held_out():
    queries = _iu_queries()
    assert all(set(q) == {"heading", "query", "split"} and all(isinstance(v, str) and v.strip() for v in q.values()) for q in queries)
    by_heading: dict[str, list[str]] = {}
    for q in queries:
        by_heading.setdefault(q["heading"], []).append(q["split"])
    assert by_heading and all(sorted(s) == ["dev", "held_out"] for s in by_heading.values())
    assert all(q["query"].strip().lower() != q["heading"].strip().lower() for q in queries)
    assert len({q["query"].lower() for q in queries}) == len(queries)


@pytest.mark.skipif(not (IU / "store.zarr").exists(), reason="the IU X-ray store is not built (benchmarks/labels_iu.py)")
def test_iu_queries_cover_every_dev_heading():
    sys.path.insert(0, str(REPO / "benchmarks"))
    from labels_iu import choose_queries, split_dev

    from sae.run import Run, Workspace

    meta = Run.find(Workspace(IU)).meta
    heads = {c["query"] for c in choose_queries(meta, split_dev(meta["id"], 0)) if c["kind"] == "heading"}
    assert heads == {q["heading"] for q in _iu_queries()}
    assert np.all([q["heading"] == q["heading"].lower() for q in _iu_queries()])
