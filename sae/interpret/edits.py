"""Hand edits of feature labels, kept with their provenance and applied on top of any labeler's labels.

``saes/<run>/label-edits.jsonl`` is an append-only log (one JSON object per edit, fsync'd): feature,
label, description, author, time, the labeler whose label it replaced and that label. The latest edit
of a feature wins; the labeler's own file is never rewritten, so re-labeling keeps the hand edits.
"""

from __future__ import annotations

import getpass
import json
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from sae.errors import LabelError

EDITS_FILE = "label-edits.jsonl"
MAX_LABEL = 120
MAX_DESCRIPTION = 600


def edits_path(run_path: Path) -> Path:
    return Path(run_path) / EDITS_FILE


def record_edit(run_path: Path, feature: int, label: str, *, description: str = "", author: str | None = None,
                replaced_labeler: str = "", replaced_label: str = "") -> dict:
    """Append one hand edit; returns the record written."""
    label = " ".join(str(label).split())
    if not label:
        raise LabelError("a hand-edited label cannot be empty")
    if len(label) > MAX_LABEL:
        raise LabelError(f"labels are at most {MAX_LABEL} characters (got {len(label)})")
    rec = {"feature": int(feature), "label": label, "description": " ".join(str(description).split())[:MAX_DESCRIPTION],
           "author": author or _user(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "replaced_labeler": replaced_labeler, "replaced_label": replaced_label}
    path = edits_path(run_path)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(rec) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return rec


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (containers)
        return "unknown"


def read_edits(run_path: Path) -> pd.DataFrame:
    """Every edit in order (a truncated last line from a crash is skipped and reported by a warning)."""
    path = edits_path(run_path)
    cols = ["feature", "label", "description", "author", "time", "replaced_labeler", "replaced_label"]
    if not path.exists():
        return pd.DataFrame(columns=cols)
    recs = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            recs.append(json.loads(line))
        except json.JSONDecodeError:
            import warnings

            warnings.warn(f"{path}: line {n} is not valid JSON (an interrupted write?); it is ignored", stacklevel=2)
    return pd.DataFrame(recs, columns=cols)


def apply_edits(frame: pd.DataFrame, edits: pd.DataFrame) -> pd.DataFrame:
    """Labels with the latest hand edit of each feature applied; ``edited_by`` / ``edited_at`` record who and when."""
    out = frame.copy()
    out["edited_by"] = pd.Series([None] * len(out), dtype=object)
    out["edited_at"] = pd.Series([None] * len(out), dtype=object)
    if edits.empty:
        return out
    latest = edits.drop_duplicates("feature", keep="last").set_index("feature")
    pos = pd.Index(out["feature"].astype(int))
    f: Any  # a feature number, from the edits' index
    for f, e in latest.iterrows():
        i = pos.get_indexer(pd.Index([int(f)]))[0]
        if i < 0:
            continue
        out.iloc[i, _column(out, "label")] = e["label"]
        if e["description"]:
            out.iloc[i, _column(out, "description")] = e["description"]
        out.iloc[i, _column(out, "edited_by")] = e["author"]
        out.iloc[i, _column(out, "edited_at")] = e["time"]
        if "status" in out:
            out.iloc[i, _column(out, "status")] = "ok"
    return out


def _column(frame: pd.DataFrame, name: str) -> int:
    """Position of a column (the label table's column names are unique)."""
    loc = frame.columns.get_loc(name)
    if not isinstance(loc, int):
        raise LabelError(f"the label table has more than one {name!r} column")
    return loc
