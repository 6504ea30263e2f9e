"""SAE metrics, each checked in the tests against a direct NumPy computation.

Reconstruction (FVU / R2 with numerator and denominator accumulated separately, variance around
the mean), sparsity (L0, dead and dense fractions, firing-rate histogram), SAIL's probe recovery and
fingerprint retrieval fidelity, monosemanticity over metadata, ground-truth recovery on planted
data and seed stability.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from sae.errors import SaeError
from sae.models import SparseAutoencoder


# ---------------------------------------------------------------------- reconstruction
@dataclass
class ReconstructionAccumulator:
    """Streams batches; FVU = SSE / SST with SST around the mean of all rows seen (float64 sums)."""

    sse: float = 0.0
    n: int = 0
    l0_sum: float = 0.0
    sum_x: np.ndarray | None = None
    sum_x2: np.ndarray | None = None

    def update(self, x: np.ndarray, x_hat: np.ndarray, l0: np.ndarray | None = None) -> None:
        x = np.asarray(x, np.float64)
        self.sse += float(((x - np.asarray(x_hat, np.float64)) ** 2).sum())
        self.sum_x = x.sum(0) if self.sum_x is None else self.sum_x + x.sum(0)
        self.sum_x2 = (x**2).sum(0) if self.sum_x2 is None else self.sum_x2 + (x**2).sum(0)
        self.n += len(x)
        if l0 is not None:
            self.l0_sum += float(np.sum(l0))

    @property
    def sst(self) -> float:
        if self.sum_x is None or self.sum_x2 is None:
            raise SaeError("no rows to evaluate")
        return float((self.sum_x2 - self.sum_x**2 / self.n).sum())

    def result(self) -> dict[str, float]:
        if not self.n:
            raise SaeError("no rows to evaluate")
        # one row (or identical rows) has no variance to explain: FVU and R2 are undefined, not huge
        fvu = self.sse / self.sst if self.n > 1 and self.sst > 0 else float("nan")
        return {"fvu": fvu, "r2": 1.0 - fvu, "mse": self.sse / self.n, "l0": self.l0_sum / self.n, "rows": self.n}


def reconstruction(model: SparseAutoencoder, batches: Iterable[np.ndarray], device: str = "cpu") -> dict[str, float]:
    """FVU, R2, MSE per row and mean L0 of ``model`` over the given batches of raw embeddings."""
    acc = ReconstructionAccumulator()
    for x in batches:
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
        vals, idx = model.encode(xt)
        x_hat = model.decode_codes(vals, idx).cpu().numpy()
        acc.update(x, x_hat, (vals > 0).sum(1).cpu().numpy())
    return acc.result()


def sparsity(rates: np.ndarray, dense_threshold: float = 0.1, bins: int = 20) -> dict:
    """Dead and dense fractions and a histogram of log10 firing rates (rates = share of rows active)."""
    rates = np.asarray(rates, np.float64)
    alive = rates[rates > 0]
    edges = np.linspace(-7, 0, bins + 1)
    hist, _ = np.histogram(np.log10(np.clip(alive, 1e-7, 1)), bins=edges)
    return {
        "dead_frac": float((rates == 0).mean()),
        "dense_frac": float((rates > dense_threshold).mean()),
        "density_hist": {"log10_rate_edges": edges.round(3).tolist(), "counts": hist.tolist()},
    }


# ---------------------------------------------------------------------- probes (SAIL)
def _split_xy(labels: np.ndarray, train_mask: np.ndarray):
    classes, y = np.unique(labels.astype(str), return_inverse=True)
    return classes, y[train_mask], y[~train_mask]


def probe_recovery(
    dense: np.ndarray,
    codes: sp.csr_matrix,
    labels: np.ndarray,
    train_mask: np.ndarray,
    ns: Sequence[int] = (1, 3, 10, 50),
    seed: int = 0,
    baselines: dict[str, sp.csr_matrix] | None = None,
) -> pd.DataFrame:
    """Logistic-regression probe on dense embeddings vs on the top-N SAE features (ANOVA F on train rows).

    Returns balanced test accuracy for the dense probe and for each N (``sae_topN``), with the ratio to
    dense, and the same k-sparse probe on each code matrix of ``baselines`` (``<name>_topN``, e.g. a
    random SAE's codes) and on the N best raw embedding dimensions (``raw_topN``): what N features of
    the embedding itself already give.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.preprocessing import StandardScaler

    classes, y_tr, y_te = _split_xy(np.asarray(labels), train_mask)
    if len(classes) < 2 or len(np.unique(y_tr)) < 2:
        raise SaeError("probe recovery needs at least two classes in the training rows")

    def fit_score(x_tr, x_te) -> float:
        scaler = StandardScaler().fit(x_tr)
        clf = LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
        clf.fit(scaler.transform(x_tr), y_tr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a class absent from the test rows is fine here
            return float(balanced_accuracy_score(y_te, clf.predict(scaler.transform(x_te))))

    dense_acc = fit_score(dense[train_mask], dense[~train_mask])
    rows = [{"probe": "dense", "n_features": dense.shape[1], "balanced_accuracy": dense_acc, "ratio_to_dense": 1.0}]
    tr, te = np.flatnonzero(train_mask), np.flatnonzero(~train_mask)
    matrices: dict[str, tuple[np.ndarray, np.ndarray, bool]] = {}
    for name, mat in {"sae": codes, **(baselines or {})}.items():
        mat = sp.csr_matrix(mat)
        matrices[name] = (mat[tr].toarray(), mat[te].toarray(), True)
    matrices["raw"] = (dense[tr], dense[te], False)  # raw dimensions separate classes with either sign
    for name, (x_tr, x_te, one_sided) in matrices.items():
        order = select_features(x_tr, y_tr, max(ns), one_sided=one_sided)
        for n in ns:
            cols = order[:n]
            acc = fit_score(x_tr[:, cols], x_te[:, cols])
            rows.append({"probe": f"{name}_top{n}", "n_features": n, "balanced_accuracy": acc, "ratio_to_dense": acc / max(dense_acc, 1e-12)})
    return pd.DataFrame(rows)


def select_features(codes: np.ndarray, y: np.ndarray, n: int, one_sided: bool = True) -> np.ndarray:
    """The ``n`` features that best separate the classes, taken round-robin over classes.

    Each class ranks features by a one-vs-rest ANOVA F (features firing more inside the class than
    outside; with ``one_sided=False``, as for raw embedding dimensions, either direction counts);
    classes then take turns, so a 7-class target gets features for every class instead of ten
    near-duplicates for the easiest one.
    """
    from sklearn.feature_selection import f_classif

    classes = np.unique(y)
    if len(classes) == 2:
        classes = classes[:1]  # one ranking serves both sides of a binary target
    rankings = []
    for c in classes:
        inside = y == c
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # constant (never firing) features have no F statistic
            f, _ = f_classif(codes, inside)
        f = np.nan_to_num(f, nan=-1.0)
        if len(classes) > 1 and one_sided:
            f[codes[inside].mean(0) <= codes[~inside].mean(0)] = -1.0
        rankings.append(list(np.argsort(-f, kind="stable")))
    chosen: list[int] = []
    seen: set[int] = set()
    pos = [0] * len(rankings)
    while len(chosen) < min(n, codes.shape[1]):
        progressed = False
        for i, ranking in enumerate(rankings):
            while pos[i] < len(ranking) and ranking[pos[i]] in seen:
                pos[i] += 1
            if pos[i] < len(ranking) and len(chosen) < n:
                chosen.append(int(ranking[pos[i]]))
                seen.add(ranking[pos[i]])
                progressed = True
        if not progressed:
            break
    return np.asarray(chosen, dtype=np.int64)


# ---------------------------------------------------------------------- fingerprint fidelity (SAIL)
def _topk_neighbours(sim: np.ndarray, k: int, exclude: np.ndarray) -> np.ndarray:
    sim = sim.copy()
    sim[np.arange(len(exclude)), exclude] = -np.inf
    return np.argpartition(-sim, k, axis=1)[:, :k]


def fingerprint_fidelity(dense: np.ndarray, codes: sp.csr_matrix, queries: np.ndarray, k: int = 10, top_features: int = 8) -> float:
    """Share of each query's k dense-cosine neighbours recovered by its top-feature fingerprint.

    A fingerprint keeps each item's ``top_features`` strongest features; neighbours are ranked by the
    cosine between fingerprints (the query's) and full codes (the candidates').
    """
    x = dense / np.linalg.norm(dense, axis=1, keepdims=True).clip(1e-12)
    dense_nn = _topk_neighbours(x[queries] @ x.T, k, queries)
    fp = top_features_only(sp.csr_matrix(codes[queries]), top_features)
    full = sp.csr_matrix(codes, dtype=np.float64)
    norms = np.sqrt(np.asarray(full.multiply(full).sum(1))).ravel().clip(1e-12)
    fpn = np.sqrt(np.asarray(fp.multiply(fp).sum(1))).ravel().clip(1e-12)
    sim = np.asarray((fp @ full.T).todense()) / fpn[:, None] / norms[None, :]
    sparse_nn = _topk_neighbours(sim, k, queries)
    overlap = [len(set(a) & set(b)) / k for a, b in zip(dense_nn, sparse_nn)]
    return float(np.mean(overlap))


def top_features_only(codes: sp.csr_matrix, top: int) -> sp.csr_matrix:
    """Keep each row's ``top`` largest entries."""
    codes = sp.csr_matrix(codes, dtype=np.float64)
    rows, cols, vals = [], [], []
    for r in range(codes.shape[0]):
        a, b = codes.indptr[r], codes.indptr[r + 1]
        v, c = codes.data[a:b], codes.indices[a:b]
        keep = np.argsort(-v)[:top]
        rows.extend([r] * len(keep))
        cols.extend(c[keep])
        vals.extend(v[keep])
    return sp.csr_matrix((vals, (rows, cols)), shape=codes.shape)


# ---------------------------------------------------------------------- monosemanticity
def _random_coherence(values: np.ndarray, m: int, rng, draws: int = 200) -> float:
    """Expected modal share among ``m`` random rows (the null for coherence)."""
    codes = pd.factorize(values)[0]
    shares = [np.bincount(codes[rng.choice(len(codes), size=m, replace=False)]).max() / m for _ in range(draws)]
    return float(np.mean(shares))


def monosemanticity(
    top_rows: dict[int, np.ndarray], active_rows: dict[int, np.ndarray], meta: pd.DataFrame, columns: Sequence[str], seed: int = 0
) -> pd.DataFrame:
    """Per feature and metadata column: (coherence of the top items - random null) x specificity.

    coherence: share of the feature's top items holding the modal value v*; null: the same share for
    as many random rows; specificity: (P(v* | active) - P(v*)) / (1 - P(v*)), 1 when every active row
    holds v*, 0 at the base rate. The feature's score is its best column.
    """
    rng = np.random.default_rng(seed)
    out = []
    null_cache: dict[tuple[str, int], float] = {}
    for f, top in top_rows.items():
        if len(top) < 2:
            continue
        best = None
        for col in columns:
            values = meta[col].to_numpy()
            top_vals = pd.Series(values[top])
            modal = top_vals.mode().iloc[0]
            coherence = float((top_vals == modal).mean())
            key = (col, len(top))
            if key not in null_cache:
                null_cache[key] = _random_coherence(values, len(top), rng)
            p_all = float((values == modal).mean())
            p_active = float((values[active_rows[f]] == modal).mean())
            spec = (p_active - p_all) / (1 - p_all) if p_all < 1 else 0.0
            score = max(0.0, coherence - null_cache[key]) * max(0.0, spec)
            cand = {"feature": f, "column": col, "value": modal, "coherence": coherence, "null": null_cache[key], "specificity": spec, "score": score}
            if best is None or cand["score"] > best["score"]:
                best = cand
        out.append(best)
    return pd.DataFrame(out)


# ---------------------------------------------------------------------- the random-SAE baseline
def random_sae(model: SparseAutoencoder, k: int | None = None, seed: int = 0) -> SparseAutoencoder:
    """A TopK SAE of ``model``'s size that learned nothing: random unit decoder rows, the encoder their
    transpose, no encoder bias, ``model``'s decoder bias (the data's centre) and ``k`` active latents
    (default ``model.cfg.k``). Every metric of a trained SAE is reported beside this one's."""
    from sae.models import SAEConfig

    cfg = SAEConfig(d_in=model.cfg.d_in, n_latents=model.cfg.n_latents, k=int(k or model.cfg.k), arch="topk", aux_k=0)
    rand = SparseAutoencoder(cfg, seed=10_007 + seed)
    with torch.no_grad():
        rand.W_enc.copy_(rand.W_dec)
        rand.b_dec.copy_(model.b_dec.detach() / model.scale)
        rand.scale.fill_(1.0)
    return rand.eval()


# ---------------------------------------------------------------------- dictionaries
def unit_rows(w: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float64; zero rows stay ~zero)."""
    w = np.asarray(w, np.float64)
    return w / np.linalg.norm(w, axis=1, keepdims=True).clip(1e-12)


def ground_truth_recovery(true_directions: np.ndarray, decoder: np.ndarray, block: int = 1024) -> tuple[float, np.ndarray]:
    """Mean over true directions of the max cosine with any learned decoder row (and the per-direction values)."""
    t, d = unit_rows(true_directions), unit_rows(decoder)
    best = np.concatenate([(t[i : i + block] @ d.T).max(axis=1) for i in range(0, len(t), block)])
    return float(best.mean()), best


def seed_stability(decoder_a: np.ndarray, decoder_b: np.ndarray, candidates: int = 32) -> tuple[float, np.ndarray]:
    """Greedy one-to-one matching by decoder cosine between two SAEs; mean matched cosine.

    Pairs are taken in order of decreasing cosine among each row's ``candidates`` best partners; rows
    left without a free candidate are matched to their best free partner at the end.
    """
    a, b = unit_rows(decoder_a), unit_rows(decoder_b)
    sim = a @ b.T
    m = min(candidates, sim.shape[1])
    cand = np.argpartition(-sim, m - 1, axis=1)[:, :m]
    rows = np.repeat(np.arange(len(a)), m)
    cols = cand.reshape(-1)
    vals = sim[rows, cols]
    order = np.argsort(-vals, kind="stable")
    used_a = np.zeros(len(a), bool)
    used_b = np.zeros(len(b), bool)
    matched = np.full(len(a), np.nan)
    for i in order:
        r, c = rows[i], cols[i]
        if not used_a[r] and not used_b[c]:
            used_a[r] = used_b[c] = True
            matched[r] = vals[i]
    for r in np.flatnonzero(~used_a):
        free = np.flatnonzero(~used_b)
        if not len(free):
            break
        c = free[np.argmax(sim[r, free])]
        used_b[c] = True
        matched[r] = sim[r, c]
    matched = matched[~np.isnan(matched)]
    return float(matched.mean()), matched
