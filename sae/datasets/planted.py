"""Planted ground truth: synthetic embeddings whose concepts, hierarchy and failure slices are known.

Each row is a sparse non-negative combination of named unit-norm concept directions plus a shared
offset and Gaussian noise. Children only fire with their parent; some concepts are revealed through
categorical metadata columns; planted failure slices (a concept that causes failures, a rare
subgroup, a spurious correlation) drive a ``failure`` column. Rows are generated block by block
straight into the store, so 1e6 rows need little memory.

By default a child's direction is independent of its parent's. Real hierarchies are not: "dog" lies
near "animal". ``child_cos`` makes each child share a component with its parent, ``children_per_parent``
fixes the family sizes and ``exclusive_siblings`` keeps sibling sub-types apart in a row; this is
the setting where SAEs absorb parents into children (:func:`hierarchical_config` is the benchmark's
dataset, :mod:`sae.truth` its metrics). With the defaults the data are exactly those of before.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from sae._progress import tqdm
from sae.errors import SaeError
from sae.store import Store

_ADJECTIVES = [
    "calcified", "cystic", "hyperintense", "hypointense", "enhancing", "necrotic", "haemorrhagic", "oedematous", "fibrotic", "atrophic", "lobulated",
    "spiculated", "nodular", "diffuse", "focal", "bilateral", "unilateral", "symmetric", "asymmetric", "periventricular", "cortical", "subcortical",
    "juxtacortical", "infratentorial", "supratentorial", "ring-like", "patchy", "confluent", "linear", "punctate", "mottled", "homogeneous",
    "heterogeneous", "septated", "fatty", "sclerotic", "lytic", "vascular", "ischaemic", "congenital",
]
_NOUNS = [
    "nodule", "lesion", "mass", "cyst", "infarct", "haematoma", "aneurysm", "stenosis", "plaque", "effusion", "oedema", "fracture", "tumour", "abscess",
    "calcification", "granuloma", "haemangioma", "meningioma", "glioma", "lymphoma", "metastasis", "ventricle", "sulcus", "gyrus", "cortex", "thalamus",
    "hippocampus", "cerebellum", "brainstem", "pons", "midbrain", "corpus-callosum", "caudate", "putamen", "insula", "amygdala", "fornix", "falx",
    "tentorium", "sinus", "orbit", "skull", "scalp", "artefact", "stripe", "shadow", "halo", "ring", "blur", "streak", "grain", "ghost", "gradient",
    "spot", "band", "edge",
]
META_COLUMN_NAMES = ("finding", "location", "pattern", "texture", "shape", "margin", "signal", "extent")


@dataclass(frozen=True)
class SliceSpec:
    """A planted failure slice: rows matching it fail at ``failure_rate``."""

    kind: str
    """``concept`` (one concept causes failures), ``subgroup`` (two concepts together) or ``spurious``
    (a concept that co-occurs with ``label`` = 1 fails where ``label`` = 0)."""
    size: float = 0.05
    """Share of rows in the slice (the generator plants it at this rate)."""
    failure_rate: float = 0.8


DEFAULT_SLICES = (SliceSpec("concept", 0.05), SliceSpec("subgroup", 0.03), SliceSpec("spurious", 0.04))


@dataclass(frozen=True)
class PlantedConfig:
    """Everything that determines a planted dataset (same config, same data)."""

    n_rows: int = 10_000
    dim: int = 768
    n_concepts: int = 512
    n_parents: int = 32
    """The first ``n_parents`` concepts each have children (about half of the other concepts); a child fires only with its parent."""
    children_per_parent: int = 0
    """Exactly this many children per parent (drawn at random among the concepts after the parents);
    0 keeps the original layout (half of the other concepts, each given a random parent)."""
    child_cos: float = 0.0
    """Cosine of each child's direction with its parent's: child = a * parent + sqrt(1 - a**2) * own, with
    a = ``child_cos`` and ``own`` the child's random direction orthogonalised against the parent (so the
    child stays unit norm). 0: independent directions; in [0, 1)."""
    exclusive_siblings: bool = False
    """At most one child of each parent per row: a row's later draw of a sibling of an already drawn
    child is dropped (mutually exclusive sub-types, "dog" or "cat" but not both). Parents still appear
    alone, whenever they are drawn without any of their children."""
    k_active: int = 12
    """Concept draws per row (duplicates merge; children also switch their parent on)."""
    zipf: float = 0.6
    """Concept frequencies fall off as rank**-zipf."""
    noise: float = 0.05
    """Noise norm as a share of the mean signal norm."""
    offset: float = 1.0
    """Norm of a shared offset added to every row (real embeddings are not centred)."""
    n_revealed: int = 64
    """Concepts named by the categorical metadata columns (split over up to 8 columns)."""
    n_meta_columns: int = 8
    rows_per_group: int = 10
    slices: tuple[SliceSpec, ...] = DEFAULT_SLICES
    base_failure_rate: float = 0.03
    reveal_slice_concepts: bool = False
    """Also name the concepts behind the planted slices in the metadata columns, so offline
    (metadata) labels can name them: the slice-naming benchmark needs labels that could be right."""
    dtype: str = "float32"
    seed: int = 0


@dataclass
class PlantedTruth:
    """The ground truth behind a planted store."""

    directions: np.ndarray
    """(n_concepts, dim) unit-norm concept directions."""
    names: list[str]
    parents: np.ndarray
    """Parent concept of each concept (-1 for none)."""
    frequencies: np.ndarray
    """Empirical share of rows where each concept is active."""
    revealed: dict[str, list[int]]
    """Metadata column -> the concepts whose names it reports."""
    slices: list[dict]
    """Per planted slice: kind, concepts, names, rows (bool mask), failure_rate."""
    offset: np.ndarray
    codes: sp.csr_matrix
    """(n_rows, n_concepts) true activations."""
    config: PlantedConfig | None = field(repr=False, default=None)

    def save(self, path: str | os.PathLike) -> None:
        """Write the truth next to a store (``.npz``), so benchmarks can reload it."""
        np.savez_compressed(
            path, directions=self.directions, names=np.array(self.names), parents=self.parents,
            frequencies=self.frequencies, offset=self.offset, codes_data=self.codes.data,
            codes_indices=self.codes.indices, codes_indptr=self.codes.indptr,
            codes_shape=np.array(self.codes.shape),
        )


def concept_names(n: int, rng: np.random.Generator) -> list[str]:
    """Unique, readable names ("calcified nodule") for ``n`` concepts."""
    pairs = [f"{a} {b}" for a in _ADJECTIVES for b in _NOUNS]
    if n > len(pairs):
        pairs += [f"{p} {i}" for i in range(n // len(pairs) + 1) for p in pairs]
    order = rng.permutation(len(pairs))[:n]
    return [pairs[i] for i in order]


def _frequencies(cfg: PlantedConfig) -> np.ndarray:
    weights = np.arange(1, cfg.n_concepts + 1, dtype=np.float64) ** -cfg.zipf
    return weights / weights.sum()


def _check_hierarchy(cfg: PlantedConfig) -> None:
    if cfg.n_concepts < cfg.n_parents + cfg.n_revealed // 2 + 8:
        raise SaeError(f"n_concepts={cfg.n_concepts} is too small for {cfg.n_parents} parents and {cfg.n_revealed} revealed concepts")
    if not 0.0 <= cfg.child_cos < 1.0:
        raise SaeError(f"child_cos must be in [0, 1), got {cfg.child_cos}")
    if cfg.children_per_parent < 0 or cfg.n_parents * (cfg.children_per_parent + 1) > cfg.n_concepts:
        raise SaeError(f"children_per_parent={cfg.children_per_parent} must be >= 0 and leave room: "
                       f"{cfg.n_parents} parents x (1 + children) > n_concepts={cfg.n_concepts}")


def _structure(cfg: PlantedConfig, rng: np.random.Generator):
    _check_hierarchy(cfg)
    names = concept_names(cfg.n_concepts, rng)
    directions = rng.standard_normal((cfg.n_concepts, cfg.dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    parents = np.full(cfg.n_concepts, -1)
    if cfg.n_parents and cfg.children_per_parent:
        children = rng.choice(np.arange(cfg.n_parents, cfg.n_concepts), size=cfg.n_parents * cfg.children_per_parent, replace=False)
        parents[children] = np.repeat(np.arange(cfg.n_parents), cfg.children_per_parent)
    elif cfg.n_parents:
        children = rng.choice(np.arange(cfg.n_parents, cfg.n_concepts), size=(cfg.n_concepts - cfg.n_parents) // 2, replace=False)
        parents[children] = rng.integers(0, cfg.n_parents, size=len(children))
    if cfg.child_cos:
        directions = share_parent_component(directions, parents, cfg.child_cos)
    offset = rng.standard_normal(cfg.dim)
    offset *= cfg.offset / np.linalg.norm(offset)
    return names, directions, parents, offset


def share_parent_component(directions: np.ndarray, parents: np.ndarray, child_cos: float) -> np.ndarray:
    """Directions where each child is ``child_cos * parent + sqrt(1 - child_cos**2) * own`` (unit norm).

    ``own`` is the child's current direction with its parent component removed, so the child's cosine
    with its parent is exactly ``child_cos``; parents and parent-free concepts are unchanged.
    """
    out = np.array(directions, dtype=np.float64)
    kids = np.flatnonzero(parents >= 0)
    p = out[parents[kids]]
    own = out[kids] - (out[kids] * p).sum(1, keepdims=True) * p
    own /= np.linalg.norm(own, axis=1, keepdims=True).clip(1e-12)
    out[kids] = child_cos * p + np.sqrt(1.0 - child_cos**2) * own
    return out


def _pick_slices(cfg: PlantedConfig, parents: np.ndarray, rng: np.random.Generator) -> list[dict]:
    """Choose the concepts behind each planted slice among rarer, parent-free concepts."""
    pool = [c for c in range(cfg.n_concepts // 2, cfg.n_concepts) if parents[c] < 0]
    rng.shuffle(pool)
    slices = []
    for spec in cfg.slices:
        if spec.kind not in ("concept", "subgroup", "spurious"):
            raise SaeError(f"unknown slice kind {spec.kind!r}; use concept, subgroup or spurious")
        need = 2 if spec.kind in ("subgroup", "spurious") else 1
        if len(pool) < need:
            raise SaeError("not enough concepts to plant every slice; raise n_concepts")
        concepts = [pool.pop() for _ in range(need)]
        slices.append({"kind": spec.kind, "concepts": concepts, "size": spec.size, "failure_rate": spec.failure_rate})
    return slices


def _reveal(cfg: PlantedConfig, parents: np.ndarray, slices: list[dict], rng: np.random.Generator) -> dict[str, list[int]]:
    taken = {c for s in slices for c in s["concepts"]}
    candidates = [c for c in range(cfg.n_concepts) if c not in taken]
    chosen = rng.choice(candidates, size=min(cfg.n_revealed, len(candidates)), replace=False)
    if cfg.reveal_slice_concepts:
        chosen = np.concatenate([np.asarray(sorted(taken), dtype=chosen.dtype), chosen])[: max(cfg.n_revealed, len(taken))]
    n_cols = max(1, min(cfg.n_meta_columns, len(META_COLUMN_NAMES), len(chosen)))
    return {META_COLUMN_NAMES[i]: sorted(int(c) for c in chosen[i::n_cols]) for i in range(n_cols)}


def _block_codes(n: int, cfg: PlantedConfig, probs, parents, slices, rng) -> tuple[sp.csr_matrix, np.ndarray]:
    """True activations for ``n`` rows (and the binary ``label`` used by spurious slices)."""
    cdf = np.cumsum(probs)
    draws = np.searchsorted(cdf, rng.random((n, cfg.k_active)) * cdf[-1]).clip(max=cfg.n_concepts - 1)
    rows = np.repeat(np.arange(n), cfg.k_active)
    cols = draws.reshape(-1)
    if cfg.exclusive_siblings:
        keep = _first_of_each_family(draws, parents).reshape(-1)
        rows, cols = rows[keep], cols[keep]
    with_parent = parents[cols] >= 0
    rows = np.concatenate([rows, rows[with_parent]])
    cols = np.concatenate([cols, parents[cols[with_parent]]])
    label = rng.random(n) < 0.5
    for s in slices:
        planted = _plant_rows(s, n, label, rng)
        targets = [(c, planted) for c in s["concepts"]]
        if s["kind"] == "spurious":  # concepts = (spurious cue, the concept that truly makes label 1)
            targets = [(s["concepts"][0], planted), (s["concepts"][1], label)]
        for c, mask in targets:
            rows = np.concatenate([rows, np.flatnonzero(mask)])
            cols = np.concatenate([cols, np.full(int(mask.sum()), c)])
    values = rng.uniform(0.5, 2.0, size=len(rows))
    codes = sp.csr_matrix((values, (rows, cols)), shape=(n, cfg.n_concepts))
    codes.sum_duplicates()
    codes.data = np.minimum(codes.data, 2.5)  # a concept drawn twice is still one concept, with a bounded value
    return codes, label


def _first_of_each_family(draws: np.ndarray, parents: np.ndarray) -> np.ndarray:
    """Mask of the draws to keep: a child drawn after a different child of the same parent in its row is dropped."""
    family = parents[draws]
    keep = np.ones(draws.shape, dtype=bool)
    for j in range(1, draws.shape[1]):
        sibling = (family[:, :j] == family[:, j : j + 1]) & (draws[:, :j] != draws[:, j : j + 1]) & keep[:, :j]
        keep[:, j] = (family[:, j] < 0) | ~sibling.any(axis=1)
    return keep


def _plant_rows(s: dict, n: int, label: np.ndarray, rng) -> np.ndarray:
    if s["kind"] == "spurious":  # the spurious concept mostly accompanies label 1, sometimes label 0
        p = np.where(label, 8 * s["size"], 2 * s["size"])  # P(label=1 | cue) = 0.8; cue & label 0 ~ size
        return rng.random(n) < p
    return rng.random(n) < s["size"]


def _slice_members(s: dict, codes: sp.csr_matrix, label: np.ndarray) -> np.ndarray:
    active = (codes[:, s["concepts"]] > 0).toarray()
    if s["kind"] == "concept":
        return active[:, 0]
    if s["kind"] == "subgroup":
        return active.all(axis=1)
    return active[:, 0] & ~label


def _block_meta(codes: sp.csr_matrix, label: np.ndarray, start: int, cfg: PlantedConfig, names, revealed, slices, rng):
    data: dict[str, np.ndarray] = {}
    for column, concepts in revealed.items():
        sub = codes[:, concepts].toarray()
        best = sub.argmax(axis=1)
        has = sub.max(axis=1) > 0
        data[column] = np.where(has, np.asarray([names[c] for c in concepts], dtype=object)[best], "none")
    data["group"] = np.asarray([f"g{(start + i) // cfg.rows_per_group:07d}" for i in range(codes.shape[0])], dtype=object)
    data["label"] = label
    members = np.zeros((codes.shape[0], len(slices)), dtype=bool)
    for j, s in enumerate(slices):
        members[:, j] = _slice_members(s, codes, label)
    p_fail = np.where(members.any(axis=1), np.max(np.where(members, [s["failure_rate"] for s in slices], 0), axis=1, initial=0.0), cfg.base_failure_rate)
    data["failure"] = rng.random(codes.shape[0]) < p_fail
    return pd.DataFrame(data), members


def _blocks(cfg: PlantedConfig, parts, block_rows: int) -> Iterator[tuple]:
    names, directions, parents, offset, slices, revealed = parts
    probs = _frequencies(cfg)
    signal_norm = None
    for b, start in enumerate(range(0, cfg.n_rows, block_rows)):
        n = min(block_rows, cfg.n_rows - start)
        rng = np.random.default_rng([cfg.seed, 1, b])
        codes, label = _block_codes(n, cfg, probs, parents, slices, rng)
        signal = np.asarray(codes @ directions)
        if signal_norm is None:
            signal_norm = float(np.linalg.norm(signal, axis=1).mean())
        noise = rng.standard_normal(signal.shape) * (cfg.noise * signal_norm / np.sqrt(cfg.dim))
        meta, members = _block_meta(codes, label, start, cfg, names, revealed, slices, rng)
        yield start, codes, (signal + offset + noise).astype(np.float32), meta, members


def make_planted(
    dest: str | os.PathLike,
    cfg: PlantedConfig | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    block_rows: int = 16384,
) -> tuple[Store, PlantedTruth]:
    """Generate a planted store at ``dest`` (path or fsspec URL) and return it with its ground truth."""
    cfg = cfg or PlantedConfig()
    if cfg.n_rows <= 0:
        raise SaeError("n_rows must be positive")
    rng = np.random.default_rng([cfg.seed, 0])
    names, directions, parents, offset = _structure(cfg, rng)
    slices = _pick_slices(cfg, parents, rng)
    revealed = _reveal(cfg, parents, slices, rng)
    parts = (names, directions, parents, offset, slices, revealed)
    codes_blocks, member_blocks = [], []
    prov = {"dataset": "planted", "config": _config_dict(cfg), "group_key": "group"}
    enc = {"name": "planted", "dim": cfg.dim}
    with (
        Store.create(dest, cfg.dim, dtype=cfg.dtype, encoder=enc, provenance=prov, overwrite=overwrite) as store,
        tqdm(total=cfg.n_rows, desc="planted rows", unit="rows", disable=not progress) as bar,
    ):
        for start, codes, x, meta, members in _blocks(cfg, parts, block_rows):
            ids = [f"p{start + i:08d}" for i in range(len(x))]
            store.append(x, ids, meta)
            codes_blocks.append(codes)
            member_blocks.append(members)
            bar.update(len(x))
    codes = sp.vstack(codes_blocks).tocsr()
    members = np.concatenate(member_blocks)
    for j, s in enumerate(slices):
        s["rows"] = members[:, j]
        s["names"] = [names[c] for c in s["concepts"]]
    truth = PlantedTruth(
        directions=directions.astype(np.float32), names=names, parents=parents,
        frequencies=np.asarray((codes > 0).mean(axis=0)).ravel(), revealed=revealed, slices=slices,
        offset=offset.astype(np.float32), codes=codes, config=cfg,
    )
    return Store.open(store.url), truth


def hierarchical_config(n_rows: int = 100_000, dim: int = 384, seed: int = 0, **overrides: Any) -> PlantedConfig:
    """The hierarchy benchmark's dataset: 1,024 concepts, 64 parents with 6 children each (cosine 0.6).

    Children are 384 of the other 960 concepts, the remaining 576 have no family; siblings never share
    a row and about 47% of a parent's rows hold none of its children. Six zipf draws per row give a mean
    true L0 of about 7.6 (children switch their parent on); noise 0.05 and no failure slices (their
    dense ``label`` concept would add a 50%-frequency concept unrelated to the hierarchy).
    ``overrides`` replace any other field (e.g. ``child_cos=0.0`` for the flat control).
    """
    cfg = PlantedConfig(n_rows=n_rows, dim=dim, n_concepts=1024, n_parents=64, children_per_parent=6, child_cos=0.6,
                        exclusive_siblings=True, k_active=6, noise=0.05, slices=(), seed=seed)
    return replace(cfg, **overrides)


def _config_dict(cfg: PlantedConfig) -> dict:
    d = asdict(cfg)
    d["slices"] = [asdict(s) if not isinstance(s, dict) else s for s in cfg.slices]
    return d


def default_path(root: str | os.PathLike, cfg: PlantedConfig) -> Path:
    """A conventional location for a planted store of a given size under ``root``."""
    return Path(root) / f"planted-{cfg.n_rows}x{cfg.dim}-c{cfg.n_concepts}-s{cfg.seed}" / "store.zarr"
