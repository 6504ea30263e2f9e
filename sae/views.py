"""Views computed once in the domain and drawn alike by the widgets, the figures and the CLI.

A widget card and a paper figure of the same feature must say the same thing; so must the explorer's
map and the concept-map figure of the same audit. Each view is computed here, from the run's shared
objects, and the UI only draws it:

- :func:`feature_table`: every feature with its label, status, score, density and edit flag;
- :func:`feature_card`: one feature's label, scores, statistics, activation histogram, the enriched
  terms (significant: q < alpha and lift >= min_lift, most significant first), siblings, top items;
- :func:`slice_points`: per item, passing / failing / the validated slice whose rule it matches and
  fails in (strongest slice first): the colouring of the explorer's map and the concept-map figure;
- :func:`slice_members`: a slice's rule members with their failure flag and side of the split;
- :func:`status_colors`: the colour of passing, failing and each validated slice (:data:`PASSING_COLOR`,
  :data:`FAILING_COLOR`, :data:`SLICE_PALETTE`), so a slice is drawn alike in the explorer and the figures.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sae.errors import SaeError

if TYPE_CHECKING:
    from sae.audit.report import AuditReport
    from sae.interpret.evidence import EvidenceBuilder
    from sae.interpret.labels import LabelSet

PASSING, FAILING = "passing", "failing"
PASSING_COLOR, FAILING_COLOR = "#c8c8c8", "#5a5a5a"
"""Items that pass (light grey) and failing items outside every validated slice (dark grey)."""
SLICE_PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#469990", "#9a6324",
                 "#800000", "#808000", "#000075", "#ffe119", "#fabed4", "#6a3d9a", "#aaffc3", "#dcbeff", "#ffd8b1")
"""Validated slices' colours, by slice id (cycled after 19; the full demo validates 19); distinct hues after Sasha
Trubetskoy's list, none of them a passing / failing grey."""
FIRES_COLOR, ALL_ITEMS_COLOR = "#f58231", "#8c8c8c"
"""Where a feature fires (its activations, its items' term shares) against all items (base shares, base rate)."""
CONCEPT_PALETTE = ("#4363d8", "#3cb44b", "#911eb4", "#42d4f4", "#9a6324", "#469990", "#f032e6", "#808000")
"""A query plan's groups, in plan order (their contributions to a hit's score)."""
SCORE_COLUMNS = ("detection", "detection_sibling", "intruder", "metadata_agreement", "confidence")


def feature_table(stats: pd.DataFrame, labels: LabelSet) -> pd.DataFrame:
    """Every feature with its label, status, score (detection, else confidence), density and edit flag."""
    lab = labels.frame.set_index("feature")
    out = pd.DataFrame({"feature": np.arange(len(stats)), "rate": stats["rate"].to_numpy(), "count": stats["count"].to_numpy()})
    out["label"] = lab["label"].reindex(out["feature"]).fillna("").astype(object).to_numpy()
    out["status"] = lab["status"].reindex(out["feature"]).fillna("unlabeled").astype(object).to_numpy()
    score = lab["detection"] if "detection" in lab else lab.get("confidence")
    out["score"] = score.reindex(out["feature"]).to_numpy(float) if score is not None else np.nan
    edited = lab["edited_by"].reindex(out["feature"]) if "edited_by" in lab else pd.Series([None] * len(out))
    out["edited"] = edited.notna().to_numpy()
    return out


@dataclass(frozen=True)
class FeatureCard:
    """What is shown about one feature, in the card and in its figure."""

    feature: int
    label: str
    status: str
    description: str
    scores: dict[str, float]
    """Label scores present for this feature (detection, intruder, metadata agreement, confidence)."""
    stats: dict[str, float]
    """Count, rate, mean, max and quantiles of its activations."""
    activations: np.ndarray
    """Every activation where it fires, strongest first (the histogram)."""
    enriched: pd.DataFrame
    """Significant metadata terms (q < alpha, lift >= min_lift), most significant first."""
    siblings: pd.DataFrame
    """Nearest features (co-activation, decoder cosine) with their labels."""
    top: pd.DataFrame
    """Top activating items (at most a few per group)."""
    quantiles: pd.DataFrame
    """Items sampled across activation quantiles."""
    edited_by: str | None = None
    edited_at: str | None = None
    coverage: tuple[tuple[str, float], ...] = ()
    """(term, share of the active items carrying it) for every term the label names."""
    unsupported: tuple[str, ...] = ()
    """Label words no evidence supports (LLM labels)."""
    extra: dict[str, Any] = field(default_factory=dict)

    def histogram(self, bins: int = 30) -> tuple[np.ndarray, np.ndarray]:
        """(counts, edges) of the activations."""
        if not len(self.activations):
            return np.zeros(0, np.int64), np.zeros(0)
        return np.histogram(self.activations, bins=bins)


def _value(info: pd.Series, key: str) -> Any:
    v = info.get(key)
    return None if v is None or (isinstance(v, float) and not np.isfinite(v)) else v


def feature_card(evidence: EvidenceBuilder, labels: LabelSet, feature: int, n_enriched: int = 8, n_siblings: int = 6) -> FeatureCard:
    """The card of ``feature`` from the run's evidence builder and labels (hand edits applied)."""
    pack = evidence.pack(int(feature))
    lab = labels.frame.set_index("feature")
    info: pd.Series = lab.loc[int(feature)] if int(feature) in lab.index else pd.Series(dtype=object)  # type: ignore[assignment]
    _, acts = evidence.top_rows(int(feature))
    names = labels.mapping()
    sib = pack.siblings.head(n_siblings).copy()
    sib["label"] = [names.get(int(f), "") for f in sib["feature"]]
    return FeatureCard(
        feature=int(feature), label=str(info.get("label", "") or ""), status=str(info.get("status", "unlabeled") or "unlabeled"),
        description=str(info.get("description", "") or ""),
        scores={k: float(info[k]) for k in SCORE_COLUMNS if k in info and _value(info, k) is not None},
        stats=dict(pack.stats), activations=np.asarray(acts), enriched=pack.enriched().head(n_enriched).reset_index(drop=True),
        siblings=sib, top=pack.top, quantiles=pack.quantiles,
        edited_by=_value(info, "edited_by"), edited_at=_value(info, "edited_at"),
        coverage=tuple(zip(_list(info, "terms"), map(float, _list(info, "coverage")))), unsupported=tuple(_list(info, "unsupported")))


def _list(info: pd.Series, key: str) -> list:
    v = info.get(key)
    return [] if v is None or isinstance(v, float) else list(v)


def slice_points(report: AuditReport) -> pd.Series:
    """Per item: ``passing``, ``failing``, or the validated slice (strongest held-out lift first) whose
    rule it matches while failing; the map of the explorer and the concept-map figure colour by this."""
    failed = report.signal.failed
    status = np.where(failed, FAILING, PASSING).astype(object)
    for s in sorted((s for s in report.slices if s.stats.validated), key=lambda s: -s.stats.holdout_lift):
        rows = report.members(s.id)["row"].to_numpy()
        rows = rows[failed[rows] & (status[rows] == FAILING)]
        status[rows] = slice_title(s)
    return pd.Series(status, name="status")


def slice_title(s: Any, width: int = 40) -> str:
    """``slice 3: <name>``: how a slice is named in legends and lists (a name over ``width`` characters is cut
    with an ellipsis, never silently)."""
    name = s.name if len(s.name) <= width else s.name[: width - 1].rstrip() + "…"
    return f"slice {s.id}: {name}"


def _slice_order(title: str) -> tuple[int, str]:
    """Sort key of a slice title: its id (``slice 10`` after ``slice 9``), then the text."""
    m = re.match(r"slice (\d+)", title)
    return (int(m.group(1)) if m else 1 << 30, title)


def slice_colors(titles: Iterable[str]) -> dict[str, str]:
    """Colour per slice title (:func:`slice_title`), assigned in slice-id order: the same set of slices always
    gets the same colours, whoever draws them (passing / failing are left out; see :func:`status_colors`)."""
    ordered = sorted(set(titles) - {PASSING, FAILING}, key=_slice_order)
    return {t: SLICE_PALETTE[i % len(SLICE_PALETTE)] for i, t in enumerate(ordered)}


def status_colors(report: AuditReport) -> dict[str, str]:
    """``passing``, ``failing`` and every validated slice's title (slice-id order) -> colour: the colouring of
    :func:`slice_points` in the explorer's map, the concept-map figure and the slice figures."""
    validated = [slice_title(s) for s in report.slices if s.stats.validated]
    return {PASSING: PASSING_COLOR, FAILING: FAILING_COLOR, **slice_colors(validated)}


def slice_members(report: AuditReport, slice_id: int) -> pd.DataFrame:
    """Every item matching a slice's rule: row, id, rule score, failing, and its side of the split."""
    if not 0 <= slice_id < len(report.slices):
        raise SaeError(f"unknown slice {slice_id}; the audit has slices 0..{len(report.slices) - 1}")
    members = report.members(slice_id)
    if report.holdout is not None:
        members["holdout"] = np.isin(members["row"].to_numpy(), report.holdout)
    return members
