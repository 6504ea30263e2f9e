"""Hand-made slices: items a person selected (a lasso on the concept map) added to an audit as a slice.

Why. A researcher often sees a group of failures on the map that no rule found; listing it beside the audit's
slices (its failure rate on each side of the split, its members in ``members.parquet``) lets it be exported,
compared and followed up like the others. It is never *validated*: the person chose the items by looking at
them, held-out ones included, so the held-out items are no longer an independent test of the group; its
held-out numbers are shown for orientation only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.stats import hypergeom

from sae.audit.slices import Slice, SliceStats, describe_members
from sae.errors import SaeError

if TYPE_CHECKING:
    from sae.audit.report import AuditReport

KIND = "selection"
NOT_VALIDATED = ("hand-made selection: chosen by looking at the items (held-out ones included), so the held-out "
                 "items cannot validate it; re-find it with a rule (concepts or metadata) and audit new items to test it")
"""The ``why_not`` of every hand-made slice."""


def selection_mask(n_items: int, rows) -> np.ndarray:
    """The selected ``rows`` as a bool per item; refuses an empty selection and rows outside ``0..n_items-1``."""
    arr = np.asarray(rows)
    if arr.size == 0:
        raise SaeError("the selection is empty: select items on the map (lasso) first")
    if arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and np.all(arr == np.round(arr))):
        raise SaeError(f"rows must be item numbers (integers), got {arr.dtype}")
    arr = arr.astype(np.int64).ravel()
    if arr.min() < 0 or arr.max() >= n_items:
        raise SaeError(f"rows must be within 0..{n_items - 1} (the audit has {n_items:,} items)")
    mask = np.zeros(n_items, bool)
    mask[arr] = True
    return mask


def next_selection_name(report: AuditReport) -> str:
    """``selection N``: the default name of the next hand-made slice (N counts the report's hand-made slices)."""
    return f"selection {sum(s.kind == KIND for s in report.slices) + 1}"


def selection_stats(report: AuditReport, mask: np.ndarray) -> SliceStats:
    """The slice's numbers on the report's split: discovery and held-out members (Wilson intervals), the held-out
    lift against the held-out base rate and its one-sided hypergeometric p; never validated (see the module)."""
    if report.holdout is None:
        raise SaeError("this report does not know its held-out rows (report.holdout): re-run the audit to add a selection")
    failed = report.signal.failed
    held = np.zeros(len(failed), bool)
    held[report.holdout] = True
    disc_rows, hold_rows = np.flatnonzero(mask & ~held), np.flatnonzero(mask & held)
    d, h = describe_members(failed, disc_rows), describe_members(failed, hold_rows)
    n_hold, f_hold = int(held.sum()), int(failed[held].sum())
    base = f_hold / max(n_hold, 1)
    p = float(hypergeom.sf(h.failed - 1, n_hold, f_hold, h.members)) if h.members and h.failed > h.members * base else 1.0
    return SliceStats(discovery=d, holdout=h, cluster_size=int(failed[disc_rows].sum()),
                      holdout_lift=h.failure_rate / max(base, 1e-12), holdout_p=p, holdout_q=float("nan"),
                      validated=False, why_not=NOT_VALIDATED)


def add_selection_slice(report: AuditReport, rows, name: str) -> Slice:
    """Append the selected ``rows`` to ``report.slices`` as a slice of kind ``"selection"`` and return it.

    The slice has no concepts; its ``mask`` holds exactly the selected items, so :func:`~sae.audit.slices.slice_rows`,
    ``report.members(id)`` and ``report.member_table()`` list exactly them. Its statistics come from the report's
    discovery / held-out split (``holdout_q`` is NaN: it is not part of the audit's multiple-testing family) and it is
    never validated (``why_not`` says why). Refuses an empty selection, rows out of range and an empty name."""
    text = str(name or "").strip()
    if not text:
        raise SaeError("give the selection slice a name (it is listed with the audit's slices)")
    mask = selection_mask(len(report.signal.failed), rows)
    stats = selection_stats(report, mask)
    failed = report.signal.failed
    picked = np.flatnonzero(mask)
    failing = picked[failed[picked]]
    examples = failing if len(failing) else picked  # shown as the slice's examples (its figure, the table's ids)
    s = Slice(id=len(report.slices), name=text, concepts=[], labels=[],
              cluster_rows=failing[~np.isin(failing, np.asarray(report.holdout))],
              prototypes=examples[: report.config.prototypes], stats=stats, kind=KIND, mask=mask)
    report.slices.append(s)
    return s
