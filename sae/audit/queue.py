"""Prototype mining: each slice's prototypes become retrieval anchors over the pool (unlabeled or passing items).

A slice's look-alike plan composes its prototypes' shared features (soft) with its defining concepts
(required), so the queue ranks pool items that show the slice's concepts, most like its prototypes
first: the next items to annotate or re-check.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sae.audit.slices import Slice
from sae.search.example import ExamplePlanner, compose
from sae.search.plan import Concept, QueryPlan


def lookalike_plan(examples: ExamplePlanner, s: Slice) -> QueryPlan:
    concepts = [Concept(f, 1.0, False, lab, "slice rule", group=i) for i, (f, lab) in enumerate(zip(s.concepts, s.labels))]
    names = examples.labels or {}  # an alternative shows its own label, not the concept term it stands in for
    concepts += [Concept(a, 1.0, False, names.get(a, lab), "slice rule (or)", group=i)
                 for i, (f, lab) in enumerate(zip(s.concepts, s.labels)) for a in s.alternatives.get(f, ())]
    concepts += [Concept(f, 1.0, True, lab, "slice rule") for f, lab in zip(s.negated, s.negated_labels)]
    rule = QueryPlan(f"look-alikes of slice {s.id}: {s.name}", tuple(concepts), planner="slice-rule")
    return compose(examples.plan(s.prototypes), rule)


def lookalike_queue(index, examples: ExamplePlanner, slices: list[Slice], pool: np.ndarray, size: int,
                    ids: np.ndarray) -> pd.DataFrame:
    """Ranked look-alikes per slice within ``pool`` (bool per row), one table for all slices (``size`` 0: empty)."""
    frames = []
    for s in slices if size > 0 else ():
        allowed = pool if s.mask is None else pool & s.mask
        if not allowed.any():
            continue
        res = index.search(lookalike_plan(examples, s), top=size, allowed=allowed)
        if not res.strict:  # no pool item shows every defining concept: nothing to queue for this slice
            continue
        h = res.hits[["rank", "row", "score"]].copy()
        h.insert(0, "slice", s.id)
        h.insert(1, "slice_name", s.name)
        h.insert(2, "validated", bool(s.stats.validated))
        h.insert(4, "id", ids[h["row"].to_numpy()])
        frames.append(h)
    cols = ["slice", "slice_name", "validated", "rank", "id", "row", "score"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)
