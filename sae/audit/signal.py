"""Failure signals: which items fail, from a metadata column, an array, or a probe's cross-validated errors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from sae.errors import SaeError, UnknownColumnError


class FailureSignalError(SaeError):
    """The failure signal cannot support an audit (NaN, no failures, all failures, too few items)."""


@dataclass(frozen=True)
class FailureSignal:
    """A boolean failure flag per store row, with where it came from (and the raw score when continuous)."""

    failed: np.ndarray
    source: str
    score: np.ndarray | None = None
    column: str | None = None
    """The metadata column the signal came from (its words are kept out of slice names)."""

    @property
    def rate(self) -> float:
        return float(self.failed.mean())

    def check(self, min_slice_size: int) -> FailureSignal:
        """Refuse signals an audit cannot use, with the reason and what to do."""
        n, k = len(self.failed), int(self.failed.sum())
        if n < 2 * min_slice_size:
            raise FailureSignalError(f"{n} items are fewer than twice the minimum slice size ({min_slice_size}); "
                                     "lower min_slice_size or audit more items")
        if k == 0:
            raise FailureSignalError(f"no item fails according to {self.source}: nothing to explain")
        if k == n:
            raise FailureSignalError(f"every item fails according to {self.source}: no passing items to contrast with")
        if k < min_slice_size:
            raise FailureSignalError(f"only {k} failing items ({self.source}), fewer than the minimum slice size {min_slice_size}")
        return self

    @classmethod
    def from_values(cls, values, source: str = "array", threshold: float | None = None, above: bool = True) -> FailureSignal:
        """Booleans as they are; numbers through ``threshold`` (failure = value above it, or below with ``above=False``)."""
        arr = np.asarray(values)
        if arr.ndim != 1:
            raise FailureSignalError(f"a failure signal is one value per item; got shape {arr.shape}")
        if arr.dtype == bool:
            if threshold is not None:
                raise FailureSignalError(f"{source} is boolean; drop the threshold")
            return cls(arr.copy(), source)
        if arr.dtype.kind not in "iuf":
            raise FailureSignalError(f"{source} must be boolean or numeric (got {arr.dtype}); e.g. --failure quality_fail")
        arr = arr.astype(np.float64)
        bad = np.flatnonzero(~np.isfinite(arr))
        if len(bad):
            raise FailureSignalError(f"{source} has {len(bad)} missing or non-finite values (first rows {bad[:5].tolist()}); "
                                     "fill them or audit the rows that have a value")
        if threshold is None:
            if set(np.unique(arr)) <= {0.0, 1.0}:
                return cls(arr.astype(bool), source)
            raise FailureSignalError(f"{source} is continuous: give a threshold (e.g. --threshold 0.7 --below for a Dice score)")
        failed = arr > threshold if above else arr < threshold
        return cls(failed, f"{source} {'>' if above else '<'} {threshold:g}", arr)

    @classmethod
    def from_column(cls, meta: pd.DataFrame, column: str, threshold: float | None = None, above: bool = True) -> FailureSignal:
        if column not in meta:
            raise UnknownColumnError(f"unknown failure column {column!r}; the store has {sorted(c for c in meta.columns if c != 'id')}")
        s = meta[column]
        if s.isna().any():
            bad = np.flatnonzero(s.isna().to_numpy())
            raise FailureSignalError(f"column {column!r} has {len(bad)} missing values (first rows {bad[:5].tolist()}); "
                                     "fill them or audit the rows that have a value")
        from dataclasses import replace

        if pd.api.types.is_bool_dtype(s):
            return replace(cls.from_values(s.to_numpy(bool), f"column {column!r}", threshold, above), column=column)
        if pd.api.types.is_numeric_dtype(s):
            return replace(cls.from_values(s.to_numpy(np.float64), f"column {column!r}", threshold, above), column=column)
        raise FailureSignalError(f"column {column!r} holds text; a failure column is boolean or numeric "
                                 f"(or use probe errors: --probe {column})")

    @classmethod
    def probe_errors(cls, embeddings: np.ndarray, target: pd.Series, folds: int = 5, seed: int = 0,
                     groups: np.ndarray | None = None) -> FailureSignal:
        """Failures = items a cross-validated logistic-regression probe for ``target`` misclassifies.

        Folds are grouped (by volume, patient...) when ``groups`` is given, so no group is both
        trained on and judged; the out-of-fold probability of the true class is kept as the score.
        """
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import GroupKFold, StratifiedKFold, cross_val_predict
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if target.isna().any():
            raise FailureSignalError(f"probe target {target.name!r} has missing values")
        y = target.astype(str).to_numpy()
        if len(np.unique(y)) < 2:
            raise FailureSignalError(f"probe target {target.name!r} has a single value: nothing to classify")
        n_groups = len(np.unique(groups)) if groups is not None else 0
        if n_groups >= 2:
            folds = min(folds, n_groups)  # at most one fold per group
            cv = GroupKFold(folds)
        else:
            groups, cv = None, StratifiedKFold(folds, shuffle=True, random_state=seed)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, C=0.1))
        proba = cross_val_predict(model, embeddings, y, cv=cv, groups=groups, method="predict_proba")
        classes = np.unique(y)
        pred = classes[proba.argmax(1)]
        true_p = proba[np.arange(len(y)), np.searchsorted(classes, y)]
        return cls(pred != y, f"misclassified by a {folds}-fold probe for {target.name!r}", true_p)
