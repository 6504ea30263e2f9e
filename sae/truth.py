"""Ground-truth recovery of a trained SAE against planted truth, with hierarchy-aware metrics.

A planted dataset (:mod:`sae.datasets.planted`) knows every true concept direction, which concepts
are parents, children or neither, and which concepts are active on each row. This module measures:

* **MMCS** (mean max cosine): for each true direction the best cosine with any decoder row, averaged
  over all concepts and separately over parents (concepts that have children), children and others,
  since a single average hides a dictionary that learns parents but not children or vice versa.
* **Splits**: per true direction, the number of decoder rows with cosine > 0.9; a direction split
  into 2 or more latents is covered several times over (a dictionary spent on copies).
* **Absorption**, two ways. *Decoder*: the share of children whose best-matching latent is also their
  parent's best-matching latent (the child has no latent of its own). *Activation* (Chanin et al.
  2024, "A is for Absorption"): on rows where a child is truly active, how much more often its parent's
  latent stays silent than on rows where the parent is active without any child (the parent latent
  is missing exactly when the child's latent took over the parent's share).

:func:`recovery_report` gives all of these with the same numbers for a random decoder of the same
shape beside them, so every score has its chance level next to it.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from sae.errors import SaeError
from sae.evaluate import ground_truth_recovery, unit_rows
from sae.models import SparseAutoencoder

SPLIT_THRESHOLD = 0.9
"""Cosine above which a decoder row counts as a copy of a true direction (split, share above 0.9)."""


def mmcs(true_dirs: np.ndarray, decoder: np.ndarray) -> np.ndarray:
    """Per true direction, the max cosine with any decoder row ((n_true,) array; its mean is the MMCS)."""
    return ground_truth_recovery(true_dirs, decoder)[1]


def _matches(true_dirs: np.ndarray, decoder: np.ndarray, threshold: float, block: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per true direction: the index of its best decoder row and the number of rows with cosine > threshold."""
    t, d = unit_rows(true_dirs), unit_rows(decoder)
    best, counts = [], []
    for i in range(0, len(t), block):
        sim = t[i : i + block] @ d.T
        best.append(sim.argmax(axis=1))
        counts.append((sim > threshold).sum(axis=1))
    if not best:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(best).astype(np.int64), np.concatenate(counts).astype(np.int64)


def best_latents(true_dirs: np.ndarray, decoder: np.ndarray) -> np.ndarray:
    """Per true direction, the index of the decoder row with the highest cosine (the first one on ties)."""
    return _matches(true_dirs, decoder, np.inf)[0]


def split_counts(true_dirs: np.ndarray, decoder: np.ndarray, threshold: float = SPLIT_THRESHOLD) -> np.ndarray:
    """Per true direction, how many decoder rows have cosine > ``threshold`` with it (2 or more: split)."""
    return _matches(true_dirs, decoder, threshold)[1]


def hierarchy_groups(parents: np.ndarray) -> dict[str, np.ndarray]:
    """Concept indices of each group: ``all``, ``parents`` (have children), ``children`` (have a parent), ``others`` (neither)."""
    parents = np.asarray(parents)
    idx = np.arange(len(parents))
    is_parent = np.isin(idx, parents[parents >= 0])
    is_child = parents >= 0
    return {"all": idx, "parents": idx[is_parent], "children": idx[is_child], "others": idx[~is_parent & ~is_child]}


def decoder_absorption(true_dirs: np.ndarray, parents: np.ndarray, decoder: np.ndarray) -> np.ndarray:
    """Per child (in :func:`hierarchy_groups` order), whether its best latent is also its parent's best latent."""
    return _absorbed(best_latents(true_dirs, decoder), np.asarray(parents))


def _absorbed(best: np.ndarray, parents: np.ndarray) -> np.ndarray:
    children = np.flatnonzero(parents >= 0)
    return best[children] == best[parents[children]]


def activation_absorption(
    true_dirs: np.ndarray,
    parents: np.ndarray,
    decoder: np.ndarray,
    codes: sp.spmatrix | np.ndarray,
    true_codes: sp.spmatrix | np.ndarray,
    *,
    parent_min_cos: float = 0.5,
    min_rows: int = 20,
    max_rows: int = 20_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Activation-based absorption (Chanin et al. 2024), per child and on average.

    ``codes`` (rows x latents, the SAE's activations) and ``true_codes`` (rows x concepts) describe the
    same rows; at most ``max_rows`` of them are used (a seeded sample). For a child c of parent p whose
    parent latent L_p (p's best decoder row) has cosine > ``parent_min_cos`` with p:

        absorption(c) = max(0, P(L_p silent | c active) - P(L_p silent | p active, no child of p active))

    The second term removes a parent latent's ordinary misses, so only the misses caused by the child
    count. Children with fewer than ``min_rows`` active rows, or whose parent has fewer than
    ``min_rows`` child-free rows, are skipped. Returns ``mean`` (NaN when none qualify), ``n`` and the
    per-child ``children`` and ``scores`` arrays.
    """
    parents = np.asarray(parents)
    codes, true_codes = sp.csr_matrix(codes), sp.csr_matrix(true_codes)
    if codes.shape[0] != true_codes.shape[0]:
        raise SaeError(f"codes have {codes.shape[0]} rows but true_codes {true_codes.shape[0]}: they must describe the same rows")
    if codes.shape[0] > max_rows:
        keep = np.sort(np.random.default_rng(seed).choice(codes.shape[0], max_rows, replace=False))
        codes, true_codes = codes[keep], true_codes[keep]
    best = best_latents(true_dirs, decoder)
    parent_cos = mmcs(true_dirs, decoder)
    children = np.flatnonzero((parents >= 0) & (parent_cos[np.maximum(parents, 0)] > parent_min_cos))
    truth = sp.csc_matrix(true_codes > 0)
    latent_on = sp.csc_matrix(codes[:, best] > 0)  # column j: does concept j's best latent fire
    out_children, scores = [], []
    for p in np.unique(parents[children]):
        family = np.flatnonzero(parents == p)
        any_child = np.asarray(truth[:, family].sum(axis=1)).ravel() > 0
        parent_on = truth[:, [p]].toarray().ravel()
        lp_on = latent_on[:, [p]].toarray().ravel()
        alone = parent_on & ~any_child
        if alone.sum() < min_rows:
            continue
        miss_alone = 1.0 - lp_on[alone].mean()
        for c in children[parents[children] == p]:
            active = truth[:, [c]].toarray().ravel()
            if active.sum() < min_rows:
                continue
            out_children.append(int(c))
            scores.append(max(0.0, float(1.0 - lp_on[active].mean() - miss_alone)))
    scores_arr = np.asarray(scores, np.float64)
    return {"mean": float(scores_arr.mean()) if len(scores_arr) else float("nan"), "n": len(scores_arr),
            "children": np.asarray(out_children, np.int64), "scores": scores_arr}


def random_decoder(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Random unit-norm rows: the chance level of every decoder-based score (a stream of its own, so it
    never replays the generator of data drawn with ``default_rng(seed)``)."""
    w = np.random.default_rng([0x5AE, seed]).standard_normal(shape)
    return unit_rows(w)


def _decoder_scores(true_dirs: np.ndarray, parents: np.ndarray, decoder: np.ndarray, threshold: float) -> dict[str, Any]:
    """Every decoder-only number of :func:`recovery_report` for one decoder."""
    per = mmcs(true_dirs, decoder)
    best, counts = _matches(true_dirs, decoder, threshold)
    out: dict[str, Any] = {}
    for name, idx in hierarchy_groups(parents).items():
        out[f"mmcs_{name}"] = float(per[idx].mean()) if len(idx) else float("nan")
        out[f"above_{threshold:g}_{name}"] = float((per[idx] > threshold).mean()) if len(idx) else float("nan")
    out["split_mean_latents"] = float(counts.mean()) if len(counts) else float("nan")
    out["split_n_directions"] = int((counts >= 2).sum())
    absorbed = _absorbed(best, np.asarray(parents))
    out["absorption_decoder"] = float(absorbed.mean()) if len(absorbed) else float("nan")
    return out


def child_residuals(true_dirs: np.ndarray, parents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(children, unit directions of each child's component orthogonal to its parent).

    A child fires only with its parent, so "parent + child" and "parent + the child's own residual"
    reconstruct every row equally well with the same L0: reconstruction and sparsity cannot tell the
    two dictionaries apart. A decoder that learned the residual scores cos = sqrt(1 - cos(child, parent)^2)
    on the child's direction (0.8 at 0.6), however well it learned the concept; this is what it would
    score on the residual."""
    t = unit_rows(true_dirs)
    children = np.flatnonzero(np.asarray(parents) >= 0)
    p = t[np.asarray(parents)[children]]
    c = t[children]
    own = c - (c * p).sum(1, keepdims=True) * p
    return children, unit_rows(own)


def activation_f1(codes: sp.spmatrix | np.ndarray, true_codes: sp.spmatrix | np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per true concept, the best F1 over latents between "the concept is active" and "the latent fires"
    on the same rows, and the same for the latents' codes with their rows shuffled (the chance level
    of a best-of-n_latents match). Direction-free: a latent that fires exactly on a child's rows
    recovers the child even if its decoder row is the child's residual."""
    truth = sp.csc_matrix(sp.csr_matrix(true_codes) > 0, dtype=np.float64)
    lat = sp.csr_matrix(sp.csr_matrix(codes) > 0, dtype=np.float64)
    if truth.shape[0] != lat.shape[0]:
        raise SaeError(f"codes have {lat.shape[0]} rows, the true codes {truth.shape[0]}")

    def best(latents: sp.csr_matrix) -> np.ndarray:
        inter = (truth.T @ latents).tocsr()  # concepts x latents: rows where both are on
        t_n = np.asarray(truth.sum(0)).ravel()
        l_n = np.asarray(latents.sum(0)).ravel()
        out = np.zeros(truth.shape[1])
        for c in range(truth.shape[1]):
            a, b = inter.indptr[c], inter.indptr[c + 1]
            if b > a:
                out[c] = float((2 * inter.data[a:b] / (t_n[c] + l_n[inter.indices[a:b]])).max())
        return out

    shuffled = lat[np.random.default_rng(seed).permutation(lat.shape[0])]
    return best(lat), best(shuffled)


def recovery_report(
    true_dirs: np.ndarray,
    parents: np.ndarray,
    decoder: np.ndarray,
    codes: sp.spmatrix | np.ndarray | None = None,
    true_codes: sp.spmatrix | np.ndarray | None = None,
    *,
    threshold: float = SPLIT_THRESHOLD,
    seed: int = 0,
) -> dict[str, Any]:
    """All recovery numbers of one decoder, and the same numbers for a random decoder under ``random``.

    Keys: ``mmcs_{all,parents,children,others}`` (mean max cosine per group), ``above_0.9_{group}``
    (share of the group's directions with a decoder row above ``threshold``), ``split_mean_latents``
    (mean number of rows above ``threshold`` per direction), ``split_n_directions`` (directions with 2
    or more such rows), ``absorption_decoder`` (see :func:`decoder_absorption`), and with ``codes`` and
    ``true_codes`` (the same rows) ``absorption_activation`` and ``absorption_activation_n`` (see
    :func:`activation_absorption`; the random decoder has no codes, so its value is None: the
    subtraction of the parent's own miss rate puts its chance level at 0). ``n_{group}`` counts the
    concepts of each group and ``n_latents`` the decoder rows. ``mmcs_children_residual``: the MMCS
    of the children's parent-orthogonal components (:func:`child_residuals`); with codes,
    ``f1_{group}``: the mean best activation F1 per concept (:func:`activation_f1`; under ``random``
    the same codes with their rows shuffled).
    """
    true_dirs, parents, decoder = np.asarray(true_dirs), np.asarray(parents), np.asarray(decoder)
    if true_dirs.shape[1] != decoder.shape[1] or len(parents) != len(true_dirs):
        raise SaeError(f"shapes disagree: true directions {true_dirs.shape}, parents {parents.shape}, decoder {decoder.shape}")
    report: dict[str, Any] = {f"n_{name}": len(idx) for name, idx in hierarchy_groups(parents).items()}
    report["n_latents"] = int(decoder.shape[0])
    report.update(_decoder_scores(true_dirs, parents, decoder, threshold))
    children, own = child_residuals(true_dirs, parents)
    rand_decoder = random_decoder(decoder.shape, seed)
    report["mmcs_children_residual"] = float(mmcs(own, decoder).mean()) if len(children) else float("nan")
    report["absorption_activation"], report["absorption_activation_n"] = None, 0
    rand = _decoder_scores(true_dirs, parents, rand_decoder, threshold)
    rand["mmcs_children_residual"] = float(mmcs(own, rand_decoder).mean()) if len(children) else float("nan")
    if codes is not None and true_codes is not None:
        act = activation_absorption(true_dirs, parents, decoder, codes, true_codes, seed=seed)
        report["absorption_activation"], report["absorption_activation_n"] = act["mean"], act["n"]
        f1, f1_chance = activation_f1(codes, true_codes, seed=seed)
        for name, idx in hierarchy_groups(parents).items():
            report[f"f1_{name}"] = float(f1[idx].mean()) if len(idx) else float("nan")
            rand[f"f1_{name}"] = float(f1_chance[idx].mean()) if len(idx) else float("nan")  # the codes, rows shuffled
    report["random"] = {**rand, "absorption_activation": None, "absorption_activation_n": 0}
    return report


def sae_codes(model: SparseAutoencoder, x: np.ndarray, batch_rows: int = 4096, device: str = "cpu") -> sp.csr_matrix:
    """The model's sparse codes of raw embeddings ``x`` as a (rows x n_latents) CSR matrix."""
    blocks = []
    for i in range(0, len(x), batch_rows):
        xt = torch.from_numpy(np.ascontiguousarray(x[i : i + batch_rows], dtype=np.float32)).to(device)
        blocks.append(model.to_csr(*model.encode(xt)))
    if not blocks:
        return sp.csr_matrix((0, model.cfg.n_latents))
    return sp.vstack(blocks).tocsr()


def load_truth(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    """Directions, parents and true codes from a ``truth.npz`` written by :meth:`PlantedTruth.save`."""
    with np.load(path) as z:
        codes = sp.csr_matrix((z["codes_data"], z["codes_indices"], z["codes_indptr"]), shape=tuple(z["codes_shape"]))
        return z["directions"], z["parents"], codes
