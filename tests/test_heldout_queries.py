"""The held-out demo query set (benchmarks/demo_heldout_queries.json): well-formed, covering every direction, answerable."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ROOT / "benchmarks" / "demo_heldout_queries.json"
DEMO = ROOT / "artifacts" / "demo"

KINDS = {"direction", "direction+artifact", "or", "attribute", "negation"}
DIRECTIONS = {"inferior", "superior", "anterior", "posterior", "lateral", "medial"}
COLUMNS = {"orientation", "region", "artifact", "severity"}


def _cases() -> list[dict]:
    return json.loads(QUERIES.read_text())


def _is_pair(x) -> bool:
    return isinstance(x, list) and len(x) == 2 and x[0] in COLUMNS and isinstance(x[1], str)


def _relevant(case: dict, meta) -> np.ndarray:
    def match(pairs) -> np.ndarray:
        mask = np.ones(len(meta), bool)
        for col, val in pairs:
            mask &= (meta[col] == val).to_numpy(bool)
        return mask

    mask = match(case["all_of"])
    if case["any_of"]:
        mask &= np.logical_or.reduce([match(group) for group in case["any_of"]])
    for col, val in case["none_of"]:
        mask &= (meta[col] != val).to_numpy(bool)
    return mask


def test_every_entry_is_well_formed():
    cases = _cases()
    assert isinstance(cases, list) and cases
    for case in cases:
        assert set(case) == {"query", "kind", "all_of", "any_of", "none_of"}, case
        assert isinstance(case["query"], str) and case["query"].strip(), case
        assert case["kind"] in KINDS, case
        assert all(_is_pair(p) for p in case["all_of"]), case
        assert all(_is_pair(p) for p in case["none_of"]), case
        assert isinstance(case["any_of"], list), case
        assert all(isinstance(g, list) and g and all(_is_pair(p) for p in g) for g in case["any_of"]), case
        assert case["all_of"] or case["any_of"], case
    queries = [c["query"].lower() for c in cases]
    assert len(queries) == len(set(queries)), "duplicate query text"


def test_kinds_carry_their_structure():
    for case in _cases():
        regions = [v for col, v in case["all_of"] if col == "region"]
        artifacts = [v for col, v in case["all_of"] if col == "artifact"]
        if case["kind"].startswith("direction"):
            assert len(regions) == 1 and regions[0] in DIRECTIONS, case
            assert bool(artifacts) == (case["kind"] == "direction+artifact"), case
        if case["kind"] == "or":
            assert len(case["any_of"]) >= 2, case
        if case["kind"] == "negation":
            assert case["none_of"], case


def test_direction_queries_cover_all_six_directions():
    direction = [c for c in _cases() if c["kind"] in ("direction", "direction+artifact")]
    assert len(direction) >= 20
    per_region = Counter(v for c in direction for col, v in c["all_of"] if col == "region")
    assert set(per_region) == DIRECTIONS, per_region
    assert min(per_region.values()) >= 3, per_region


@pytest.mark.skipif(not (DEMO / "store.zarr").exists(), reason="the demo store (artifacts/demo) is not built")
def test_every_case_has_at_least_ten_relevant_rows():
    from sae.run import Run, Workspace

    meta = Run.find(Workspace(DEMO)).meta
    for case in _cases():
        for col, val in case["all_of"] + case["none_of"] + [p for g in case["any_of"] for p in g]:
            assert val in set(meta[col].astype(str)), (case["query"], col, val)
        n = int(_relevant(case, meta).sum())
        assert n >= 10, (case["query"], n)
