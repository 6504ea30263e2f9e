"""Does some feature name each value of a column, and is the name true of its strongest items?

The demo's acceptance check for labels ("every artifact is named by a feature whose top-50 items are
>= 80% that artifact"), usable on any labeled run and column.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sae.interpret.label_types import OK


def value_naming(labels, run, column: str, top: int = 50, purity: float = 0.8) -> pd.DataFrame:
    """Per value of ``column``: how many features' labels name it, and the best of them by top-``top`` purity
    (share of the feature's ``top`` strongest items that have the value); ``named`` when that purity >= ``purity``."""
    meta = run.meta
    values = meta[column].astype(str).to_numpy()
    frame = labels.frame[labels.frame["status"] == OK]
    rows = []
    for value in sorted(set(values)):
        best_f, best_p, n = -1, 0.0, 0
        for f, terms, cols in zip(frame["feature"].astype(int), frame["terms"], frame["term_columns"]):
            hit = [t for t, c in zip(terms, cols) if c == column and _names(t, value, column)]
            if not hit:
                continue
            n += 1
            items, _ = run.postings.top(f, top)
            p = float(np.mean(values[items] == value)) if len(items) else 0.0
            if p > best_p:
                best_f, best_p = f, p
        rows.append({"column": column, "value": value, "share_of_items": float(np.mean(values == value)), "features_naming": n,
                     "best_feature": best_f, f"top{top}_purity": best_p, "named": best_p >= purity})
    return pd.DataFrame(rows)


def _names(term: str, value: str, column: str) -> bool:
    """Whether a metadata term's text is the term of ``column = value`` (see :func:`sae.interpret.describe.term_text`)."""
    from sae.interpret.describe import term_text

    return term in {term_text(column, value, kind) for kind in ("str", "bool")}
