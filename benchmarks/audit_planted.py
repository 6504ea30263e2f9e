"""Failure audit on planted failure groups, counted like a user, beside Domino-style clustering and a metadata group-by.

    python benchmarks/audit_planted.py            # 30 settings (~20-25 min on one thread)
    python benchmarks/audit_planted.py --quick    # 3 settings, a smoke run

Generator (this script's own, seeded). Each row is a sparse non-negative combination of unit concept
directions (20 parents with 4 children each, children sharing cos 0.5 with their parent and firing
only with it, at most one child per parent in a row; 80 parent-free concepts with zipf-like
frequencies), plus a per-site and a per-scanner direction (sites and scanners leave a mark on real
embeddings), a shared offset and Gaussian noise. Metadata: ``site`` (A-F), ``scanner`` (mostly one per
site), a numeric ``age``, and six categorical columns that report the strongest of a few concepts
each (the planted concepts always among them, so offline labels can name them; a row showing two
concepts of one column reports only the stronger, as real annotations are incomplete). ``fail`` is
drawn at a base rate of 5%, raised on the planted groups, by kind:

* ``concept``: a child concept forced onto a few hundred rows (with its parent), failing at 50-80%;
* ``pair``: rows with BOTH of two parent concepts (natural co-occurrence removed, then forced on
  150-300 rows) failing at 60-85%; each parent's frequency is set so that it alone has a failure
  lift of about 1.1-1.2 (the measured lifts are in the JSON);
* ``metadata``: every row of one site failing at 30-50%;
* ``spurious``: a cue concept that mostly accompanies a common "true cause" concept; the cue's
  rows *without* the true cause fail at 60-80% (the cue alone is correlated with failure).

Each setting plants 2-4 kinds; 30 settings vary the seed, rows (20k-50k), d (256 / 384), noise,
sizes, rates, n_latents (256 / 512) and k (8 / 12 / 16). Per setting a workspace is built in a temp
folder, an SAE is trained at the package's training defaults (``TrainConfig()``: the automatic
schedule), labeled offline (``MetadataLabeler``, ``fail`` excluded from the evidence) and
``audit_run(run, failure="fail")`` is run.

Counting. A slice's *failing members* are the failing rows of the whole dataset that match it. A planted
group is **found** by a method when one of its slices (for the audit: a *validated* slice) has
precision >= 0.8 (share of the slice's failing members inside the group) and recall >= 0.5 (share of
the group's failing rows that are failing members of the slice). The same rule scores

* the audit (``report.members(s.id)`` of each validated slice);
* Domino-style k-means and GMM: clusters of the *dense embeddings* of the failing discovery rows (the
  audit's own discovery split), k = 2..8 by silhouette; a cluster's slice is its region (every
  failing row of the dataset whose nearest centroid / most likely component it is). k-means runs on
  the embeddings, the GMM (diagonal covariances, as Domino) on their top 64 principal components;
* metadata group-by: every value of every categorical column whose failure rate is >= 1.5x the base
  rate with >= 20 failures is a slice (its rows).

**Naming**: a found group is named when the name of the slice that found it (the matching validated
slice of highest recall) contains the planted term as a whole phrase: the concept's name (concept),
both parents' names (pair; ``pair_either`` also reported), ``<site> site``, ``site <site>`` or ``site = <site>``
(metadata), the cue's name (spurious). Naming accuracy = named / found (and named / planted).
**False discoveries**: validated slices whose failing-member precision is < 0.8 for every planted
group, over all validated slices (the same for the baselines' slices). **Queue precision**: share of
``report.queue`` items (all passing) that lie in some planted group, vs that share in the whole
passing pool (a random draw); also per found group: its matching slice's queue share in that group
vs the group's share of the passing pool.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sae.audit.report import audit_run  # noqa: E402
from sae.audit.slices import AuditConfig  # noqa: E402
from sae.datasets.planted import concept_names, share_parent_component  # noqa: E402
from sae.interpret.evidence import EvidenceConfig  # noqa: E402
from sae.interpret.labels import label_run  # noqa: E402
from sae.interpret.term_labeler import MetadataLabeler  # noqa: E402
from sae.models import SAEConfig  # noqa: E402
from sae.pipeline import train_run  # noqa: E402
from sae.run import Workspace  # noqa: E402
from sae.store import Store  # noqa: E402
from sae.train import TrainConfig  # noqa: E402

OUT = ROOT / "artifacts" / "benchmarks"
KINDS = ("concept", "pair", "metadata", "spurious")
METHODS = ("audit", "domino_kmeans", "domino_gmm", "groupby")
SITES = tuple("ABCDEF")
SCANNERS = ("GE", "Siemens", "Philips", "Canon")
CONCEPT_COLUMNS = ("finding", "location", "pattern", "texture", "shape", "margin")
N_PARENTS, N_CHILDREN, N_FLAT = 20, 4, 80
BASE_RATE = 0.05
PRECISION, RECALL = 0.8, 0.5


@dataclass(frozen=True)
class Setting:
    seed: int
    rows: int
    dim: int
    kinds: tuple[str, ...]
    noise: float = 0.15
    concept_rows: int = 400
    concept_rate: float = 0.7
    pair_rows: int = 200
    pair_rate: float = 0.8
    pair_lift: float = 1.15
    meta_rate: float = 0.5
    spurious_rows: int = 300
    spurious_rate: float = 0.7
    n_latents: int = 512
    k: int = 12


def settings(quick: bool) -> list[Setting]:
    """30 settings (3 with ``quick``), drawn from one seeded generator: every kind in about 2/3 of them."""
    combos = [KINDS, KINDS, *combinations(KINDS, 3), ("concept", "pair"), ("metadata", "spurious"), ("concept", "metadata"), ("pair", "spurious")]
    rows = (20_000, 30_000, 40_000, 50_000)
    rng = np.random.default_rng(20240611)
    out = []
    for i in range(3 if quick else 30):
        out.append(Setting(
            seed=i, rows=rows[i % 4] if not quick else 20_000, dim=(256, 384)[i % 2], kinds=tuple(combos[i % len(combos)]) if not quick else KINDS,
            noise=round(float(rng.uniform(0.1, 0.3)), 3), concept_rows=int(rng.integers(200, 601)), concept_rate=round(float(rng.uniform(0.5, 0.8)), 2),
            pair_rows=int(rng.integers(150, 301)), pair_rate=round(float(rng.uniform(0.6, 0.85)), 2), pair_lift=round(float(rng.uniform(1.1, 1.2)), 3),
            meta_rate=round(float(rng.uniform(0.3, 0.5)), 2), spurious_rows=int(rng.integers(200, 401)),
            spurious_rate=round(float(rng.uniform(0.6, 0.8)), 2), n_latents=(256, 512)[(i // 2) % 2], k=(8, 12, 16)[i % 3]))
    return out


# ---------------------------------------------------------------------------------------------- generator
def generate(st: Setting) -> tuple[np.ndarray, pd.DataFrame, dict[str, dict], dict]:
    """(embeddings, metadata with ``fail``, planted groups: kind -> {rows mask, terms, ...}, facts)."""
    rng = np.random.default_rng([st.seed, 17])
    n, P, C, F = st.rows, N_PARENTS, N_CHILDREN, N_FLAT
    n_con = P + P * C + F
    names = concept_names(n_con, rng)
    parents = np.full(n_con, -1)
    kids = np.arange(P, P + P * C).reshape(P, C)  # kids[p] = the children of parent p
    parents[kids.ravel()] = np.repeat(np.arange(P), C)
    flat = np.arange(P + P * C, n_con)
    directions = rng.standard_normal((n_con, st.dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    directions = share_parent_component(directions, parents, 0.5)

    # which concepts carry the planted groups
    perm = rng.permutation(P)
    pair_parents = [int(perm[0]), int(perm[1])]
    concept_parent = int(perm[2])
    concept_child = int(kids[concept_parent, rng.integers(C)])
    cue, cause = int(flat[-1]), int(flat[0])  # the cue is rare (forced only), the true cause common
    planted_site = SITES[int(rng.integers(len(SITES)))]

    # expected overall failure rate, to set the pair parents' frequency for the wanted marginal lift
    site_p = rng.dirichlet(np.full(len(SITES), 8.0))
    i_site = SITES.index(planted_site)  # the failing site is a small one (5-10% of rows)
    site_p[i_site] = 0.0
    site_p *= (1 - (share := rng.uniform(0.05, 0.10))) / site_p.sum()
    site_p[i_site] = share
    excess = 0.0
    if "concept" in st.kinds:
        excess += (st.concept_rate - BASE_RATE) * st.concept_rows / n
    if "pair" in st.kinds:
        excess += (st.pair_rate - BASE_RATE) * st.pair_rows / n
    if "metadata" in st.kinds:
        excess += (st.meta_rate - BASE_RATE) * site_p[SITES.index(planted_site)]
    if "spurious" in st.kinds:
        excess += (st.spurious_rate - BASE_RATE) * st.spurious_rows / n
    overall = BASE_RATE + excess
    # a parent of frequency f holds the pair rows (rate r) and f*n - pair rows failing at about the rate outside
    # the pair (b'); its lift L = (r*m + b'*(f*n - m)) / (f*n*overall) gives f = m*(r - b') / (n*(L*overall - b'))
    outside = (overall * n - st.pair_rate * st.pair_rows) / (n - st.pair_rows)
    f_pair = st.pair_rows * (st.pair_rate - outside) / (n * max(st.pair_lift * overall - outside, 1e-4))
    f_parent = rng.uniform(0.04, 0.15, P)
    f_pair = float(np.clip(f_pair, 0.04, 0.4))
    f_parent[pair_parents] = (f_pair, min(f_pair / (1 - f_pair), 0.6))  # the second loses its co-occurrences with the first

    act = np.zeros((n, n_con), dtype=bool)
    act[:, :P] = rng.random((n, P)) < f_parent
    child_w = np.ones((P, C))
    child_w[concept_parent, list(kids[concept_parent]).index(concept_child)] = 0.0  # the planted child only where forced
    for p in range(P):
        rows = np.flatnonzero(act[:, p] & (rng.random(n) < 0.7))
        pick = rng.choice(C, size=len(rows), p=child_w[p] / child_w[p].sum())
        act[rows, kids[p][pick]] = True
    f_flat = 0.3 * np.arange(1, F + 1) ** -0.6
    f_flat[0] = 0.35  # the true cause of the spurious kind: common
    f_flat[-1] = 0.0  # the cue: only where forced
    act[:, flat] = rng.random((n, F)) < f_flat
    groups: dict[str, dict] = {}
    taken = np.zeros(n, bool)

    def fresh(k: int, where: np.ndarray | None = None) -> np.ndarray:
        cand = np.flatnonzero(~taken if where is None else (~taken & where))
        chosen = rng.choice(cand, size=min(k, len(cand)), replace=False)
        taken[chosen] = True
        return chosen

    if "pair" in st.kinds:  # only the planted rows hold both parents
        both = act[:, pair_parents[0]] & act[:, pair_parents[1]]
        act[both, pair_parents[1]] = False
        act[np.ix_(both, kids[pair_parents[1]])] = False
        rows = fresh(st.pair_rows)
        act[np.ix_(rows, pair_parents)] = True
    if "concept" in st.kinds:
        rows = fresh(st.concept_rows)
        act[np.ix_(rows, kids[concept_parent])] = False
        act[rows, concept_parent] = True
        act[rows, concept_child] = True
    if "spurious" in st.kinds:
        lone = fresh(st.spurious_rows, ~act[:, cause])
        with_cause = fresh(4 * st.spurious_rows, act[:, cause])
        act[lone, cue] = True
        act[with_cause, cue] = True

    values = np.where(act, rng.uniform(0.5, 2.0, act.shape), 0.0).astype(np.float32)
    site_idx = rng.choice(len(SITES), size=n, p=site_p)
    main_scanner = rng.permutation(np.arange(len(SITES)) % len(SCANNERS))
    scanner_idx = np.where(rng.random(n) < 0.7, main_scanner[site_idx], rng.integers(len(SCANNERS), size=n))
    age = np.clip(rng.normal(55, 15, n), 18, 95).round()
    site_dirs = rng.standard_normal((len(SITES), st.dim))
    site_dirs /= np.linalg.norm(site_dirs, axis=1, keepdims=True)
    scanner_dirs = rng.standard_normal((len(SCANNERS), st.dim))
    scanner_dirs /= np.linalg.norm(scanner_dirs, axis=1, keepdims=True)
    age_dir = rng.standard_normal(st.dim)
    age_dir /= np.linalg.norm(age_dir)
    site_amp = rng.uniform(0.6, 1.2, len(SITES))
    offset = rng.standard_normal(st.dim)
    signal = values @ directions.astype(np.float32)
    signal += (site_amp[site_idx, None] * site_dirs[site_idx] + 0.5 * scanner_dirs[scanner_idx]
               + (0.3 * (age - 55) / 15)[:, None] * age_dir).astype(np.float32)
    norm = float(np.linalg.norm(signal, axis=1).mean())
    x = signal + offset.astype(np.float32) + (rng.standard_normal(signal.shape) * (st.noise * norm / np.sqrt(st.dim))).astype(np.float32)

    # metadata: site, scanner, age, and concept-reporting columns (the strongest revealed concept of each column)
    meta = pd.DataFrame({"site": np.asarray(SITES)[site_idx], "scanner": np.asarray(SCANNERS)[scanner_idx], "age": age})
    planted_concepts = [concept_child, *pair_parents, cue, cause]
    others = [c for c in rng.permutation(n_con) if c not in planted_concepts][:30]
    revealed = planted_concepts + [int(c) for c in others]
    for j, col in enumerate(CONCEPT_COLUMNS):
        cs = revealed[j::len(CONCEPT_COLUMNS)]
        sub = values[:, cs]
        meta[col] = np.where(sub.max(1) > 0, np.asarray([names[c] for c in cs], dtype=object)[sub.argmax(1)], "none")

    p_fail = np.full(n, BASE_RATE)
    if "concept" in st.kinds:
        m = act[:, concept_child]
        groups["concept"] = {"rows": m, "rate": st.concept_rate, "terms": [names[concept_child]], "concepts": [names[concept_child]],
                             "parent": names[concept_parent]}
    if "pair" in st.kinds:
        m = act[:, pair_parents[0]] & act[:, pair_parents[1]]
        groups["pair"] = {"rows": m, "rate": st.pair_rate, "terms": [names[c] for c in pair_parents], "concepts": [names[c] for c in pair_parents]}
    if "metadata" in st.kinds:
        m = meta["site"].to_numpy() == planted_site
        groups["metadata"] = {"rows": m, "rate": st.meta_rate, "terms": [planted_site], "concepts": [f"site {planted_site}"]}
    if "spurious" in st.kinds:
        m = act[:, cue] & ~act[:, cause]
        groups["spurious"] = {"rows": m, "rate": st.spurious_rate, "terms": [names[cue]], "concepts": [names[cue], f"without {names[cause]}"],
                              "cue_rows": act[:, cue], "cause_rows": act[:, cause]}
    for g in groups.values():
        p_fail[g["rows"]] = np.maximum(p_fail[g["rows"]], g["rate"])
    fail = rng.random(n) < p_fail
    meta["fail"] = fail
    facts = {"failure_rate": float(fail.mean()), "mean_l0": float(act.sum(1).mean()),
             "groups": {k: {"rows": int(g["rows"].sum()), "failing": int((g["rows"] & fail).sum()), "rate": g["rate"],
                            "concepts": g["concepts"]} for k, g in groups.items()}}
    if "pair" in st.kinds:
        facts["pair_parent_lifts"] = [float(fail[act[:, p]].mean() / fail.mean()) for p in pair_parents]
        facts["pair_lift"] = float(fail[groups["pair"]["rows"]].mean() / fail.mean())
        facts["pair_parent_frequency"] = [float(act[:, p].mean()) for p in pair_parents]
    if "spurious" in st.kinds:
        facts["cue_lift"] = float(fail[act[:, cue]].mean() / fail.mean())
    return x, meta, groups, facts


# ---------------------------------------------------------------------------------------------- counting
def score_slices(slice_fail: list[np.ndarray], groups: dict[str, dict], fail: np.ndarray) -> np.ndarray:
    """(slices, groups, 2) precision and recall of each slice's failing members (bool masks) per planted group."""
    out = np.zeros((len(slice_fail), len(groups), 2))
    for j, g in enumerate(groups.values()):
        gf = g["rows"] & fail
        for i, sf in enumerate(slice_fail):
            hit = int((sf & gf).sum())
            out[i, j] = (hit / max(int(sf.sum()), 1), hit / max(int(gf.sum()), 1))
    return out


def found_by(pr: np.ndarray, groups: dict[str, dict]) -> dict[str, int | None]:
    """kind -> the index of the slice that finds it (highest recall among those passing both thresholds), or None."""
    res = {}
    for j, kind in enumerate(groups):
        ok = np.flatnonzero((pr[:, j, 0] >= PRECISION) & (pr[:, j, 1] >= RECALL)) if len(pr) else np.array([], int)
        res[kind] = int(ok[np.argmax(pr[ok, j, 1])]) if len(ok) else None
    return res


def false_discoveries(pr: np.ndarray) -> int:
    return int((pr[:, :, 0] < PRECISION).all(axis=1).sum()) if len(pr) else 0


def redundant(pr: np.ndarray) -> int:
    """Slices matching (precision >= 0.8) a planted group that another slice already matches."""
    if not len(pr):
        return 0
    ok = pr[:, :, 0] >= PRECISION
    return int(ok.any(axis=1).sum() - ok.any(axis=0).sum())


def phrase_in(phrase: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(phrase.lower())}(?![\w-])", text.lower()) is not None


def named(kind: str, g: dict, name: str) -> tuple[bool, bool]:
    """(named, named by at least one of its terms)."""
    if kind == "metadata":
        v = g["terms"][0]
        ok = re.search(rf"(?<![\w-])(site\s*[=:]?\s*{v}|{v}\s+site)(?![\w-])", name, re.IGNORECASE) is not None
        return ok, ok
    hits = [phrase_in(t, name) for t in g["terms"]]
    return all(hits), any(hits)


def domino(x: np.ndarray, fail: np.ndarray, disc: np.ndarray, seed: int) -> dict[str, list[np.ndarray]]:
    """Domino-style slices: k-means / diagonal GMM on the failing discovery rows' embeddings, k = 2..8 by
    silhouette; each slice = the failing rows (whole dataset) assigned to one cluster."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import silhouette_score
    from sklearn.mixture import GaussianMixture

    fit_rows = disc[fail[disc]]
    all_fail = np.flatnonzero(fail)
    xf = x[fit_rows].astype(np.float64)
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(xf), min(len(xf), 2000), replace=False)
    out: dict[str, list[np.ndarray]] = {}
    pca = PCA(min(64, len(xf) - 1, x.shape[1]), random_state=seed).fit(xf)
    z = pca.transform(xf)
    z_all = pca.transform(x[all_fail].astype(np.float64))
    for method in ("domino_kmeans", "domino_gmm"):
        best, best_s = None, -2.0
        for k in range(2, 9):
            if len(xf) < 2 * k:
                break
            if method == "domino_kmeans":
                model = KMeans(k, n_init=4, random_state=seed).fit(xf)
                lab, feats = model.labels_, xf
            else:
                model = GaussianMixture(k, covariance_type="diag", random_state=seed, reg_covar=1e-4).fit(z)
                lab, feats = model.predict(z), z
            if len(np.unique(lab[sample])) < 2:
                continue
            s = float(silhouette_score(feats[sample], lab[sample]))
            if s > best_s:
                best, best_s = (k, model), s
        slices = []
        if best is not None:
            k, model = best
            assign = model.predict(x[all_fail].astype(np.float64)) if method == "domino_kmeans" else model.predict(z_all)
            for c in range(k):
                m = np.zeros(len(fail), bool)
                m[all_fail[assign == c]] = True
                slices.append(m)
        out[method] = slices
        out[method + "_k"] = [best[0] if best else 0]  # type: ignore[list-item]
    return out


def groupby_slices(meta: pd.DataFrame, fail: np.ndarray) -> tuple[list[np.ndarray], list[str]]:
    """Every categorical value failing >= 1.5x the base rate with >= 20 failures: its failing rows."""
    base = fail.mean()
    slices, names = [], []
    for col in meta.columns:
        dt = meta[col].dtype
        if col in ("id", "fail") or pd.api.types.is_bool_dtype(dt) or not (
                pd.api.types.is_object_dtype(dt) or pd.api.types.is_string_dtype(dt) or isinstance(dt, pd.CategoricalDtype)):
            continue
        v = meta[col].astype(str).to_numpy()
        for value in np.unique(v):
            m = v == value
            k = int(fail[m].sum())
            if k >= 20 and fail[m].mean() >= 1.5 * base:
                slices.append(m & fail)
                names.append(f"{col} = {value}")
    return slices, names


def audit_code_digest() -> str:
    h = hashlib.sha256()
    for p in sorted((ROOT / "sae" / "audit").glob("*.py")):
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:12]


# ---------------------------------------------------------------------------------------------- one setting
def one_setting(st: Setting, tmp: Path) -> dict:
    t = {}
    t0 = time.perf_counter()
    x, meta, groups, facts = generate(st)
    fail = meta["fail"].to_numpy(bool)
    ws = Workspace(tmp / f"ws{st.seed}")
    ws.path.mkdir(parents=True)
    prov = {"dataset": "audit_planted", "setting": asdict(st), "label_exclude": ["fail"]}
    with Store.create(ws.store_path, st.dim, encoder={"name": "audit_planted", "dim": st.dim}, provenance=prov) as store:
        store.append(x, [f"r{i:07d}" for i in range(len(x))], meta)
    t["generate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    run = train_run(ws, SAEConfig(d_in=st.dim, n_latents=st.n_latents, k=st.k), TrainConfig(seed=st.seed), evaluate=False, progress=False)
    t["train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    label_run(run, MetadataLabeler(), evidence=EvidenceConfig(exclude_columns=("fail",)), judge=None, progress=False, with_baselines=False)
    t["label"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    # the concept columns exist so that labels can name features; testing them as causes would be circular
    concept_columns = [c for c in run.meta.columns if c not in ("id", "fail", "site", "scanner", "age")]
    rep = audit_run(run, failure="fail", config=AuditConfig(seed=st.seed), save=True, exclude_columns=concept_columns)
    t["audit"] = time.perf_counter() - t0

    # the audit, counted on its validated slices
    t0 = time.perf_counter()
    n = len(fail)
    validated = [s for s in rep.slices if s.stats.validated]
    all_fail_masks = []
    for s in rep.slices:
        m = rep.members(s.id)
        mask = np.zeros(n, bool)
        mask[m["row"].to_numpy()[m["failed"].to_numpy(bool)]] = True
        all_fail_masks.append(mask)
    pr_all = score_slices(all_fail_masks, groups, fail)
    pr = pr_all[[i for i, s in enumerate(rep.slices) if s.stats.validated]] if validated else np.zeros((0, len(groups), 2))
    hit = found_by(pr, groups)
    hit_any = found_by(pr_all, groups)

    per_group = {}
    in_any = np.any([g["rows"] for g in groups.values()], axis=0)
    pool = ~fail
    q = rep.queue
    for j, (kind, g) in enumerate(groups.items()):
        i = hit[kind]
        s = validated[i] if i is not None else None
        nm, nm_any = named(kind, g, s.name) if s is not None else (False, False)
        rec = {"found": i is not None, "found_any_slice": hit_any[kind] is not None, "named": nm, "named_either": nm_any,
               "slice_name": s.name if s is not None else None,
               "best_precision": float(pr[:, j, 0][np.argmax(pr[:, j, 1])]) if len(pr) else 0.0,
               "best_recall": float(pr[:, j, 1].max()) if len(pr) else 0.0, "expected_terms": g["terms"]}
        if s is not None and len(q):
            qs = q[q["slice"] == s.id]["row"].to_numpy(int)
            share = float(g["rows"][qs].mean()) if len(qs) else float("nan")
            rand = float(g["rows"][pool].mean())
            rec |= {"queue_items": int(len(qs)), "queue_share": share, "random_share": rand,
                    "queue_x_random": share / rand if len(qs) and rand > 0 else float("nan")}
        per_group[kind] = rec
    qrows = q["row"].to_numpy(int) if len(q) else np.array([], int)
    qv = q[q["validated"].astype(bool)]["row"].to_numpy(int) if len(q) else np.array([], int)
    queue = {"items": int(len(qrows)), "in_group": int(in_any[qrows].sum()), "validated_items": int(len(qv)),
             "validated_in_group": int(in_any[qv].sum()), "pool": int(pool.sum()), "pool_in_group": int((in_any & pool).sum())}
    methods = {"audit": {"slices": len(validated), "false": false_discoveries(pr), "redundant": redundant(pr),
                         "found": {k: v is not None for k, v in hit.items()},
                         "all_slices": len(rep.slices)}}

    # baselines
    disc = np.setdiff1d(np.arange(n), rep.holdout) if rep.holdout is not None else np.arange(n)
    dom = domino(x, fail, disc, st.seed)
    for method in ("domino_kmeans", "domino_gmm"):
        prm = score_slices(dom[method], groups, fail)
        methods[method] = {"slices": len(dom[method]), "k": dom[method + "_k"][0], "false": false_discoveries(prm), "redundant": redundant(prm),
                           "found": {k: v is not None for k, v in found_by(prm, groups).items()}}
    gb, gb_names = groupby_slices(meta, fail)
    prg = score_slices(gb, groups, fail)
    methods["groupby"] = {"slices": len(gb), "false": false_discoveries(prg), "redundant": redundant(prg),
                          "found": {k: v is not None for k, v in found_by(prg, groups).items()},
                          "values": gb_names}
    t["count_and_baselines"] = time.perf_counter() - t0
    slices = [{"name": s.name, "validated": bool(s.stats.validated), "why_not": s.stats.why_not, "holdout_lift": float(s.stats.holdout_lift),
               "failing_members": int(all_fail_masks[i].sum()),
               "precision": {k: round(float(pr_all[i, j, 0]), 3) for j, k in enumerate(groups)},
               "recall": {k: round(float(pr_all[i, j, 1]), 3) for j, k in enumerate(groups)}} for i, s in enumerate(rep.slices)]
    return {"setting": asdict(st), "facts": facts, "groups": per_group, "methods": methods, "queue": queue, "slices": slices,
            "summary": rep.summary(), "seconds": t}


# ---------------------------------------------------------------------------------------------- summary
def summarize(results: list[dict]) -> dict:
    summ: dict = {"recall": {}, "planted": {}}
    for kind in KINDS:
        rs = [r for r in results if kind in r["groups"]]
        summ["planted"][kind] = len(rs)
        summ["recall"][kind] = {m: (sum(r["methods"][m]["found"][kind] for r in rs) / len(rs) if rs else None) for m in METHODS}
    allg = [(r, k) for r in results for k in r["groups"]]
    summ["recall"]["all"] = {m: sum(r["methods"][m]["found"][k] for r, k in allg) / max(len(allg), 1) for m in METHODS}
    summ["audit_recall_any_slice"] = sum(r["groups"][k]["found_any_slice"] for r, k in allg) / max(len(allg), 1)
    found = [(r, k) for r, k in allg if r["groups"][k]["found"]]
    summ["naming"] = {"found": len(found), "named": sum(r["groups"][k]["named"] for r, k in found),
                      "accuracy_given_found": sum(r["groups"][k]["named"] for r, k in found) / max(len(found), 1),
                      "accuracy_of_planted": sum(r["groups"][k]["named"] for r, k in found) / max(len(allg), 1),
                      "pair_either_given_found": (lambda fp: sum(r["groups"]["pair"]["named_either"] for r, _ in fp) / max(len(fp), 1))(
                          [(r, k) for r, k in found if k == "pair"]),
                      "by_kind": {kind: (lambda fk: {"found": len(fk), "named": sum(r["groups"][kind]["named"] for r, _ in fk)})(
                          [(r, k) for r, k in found if k == kind]) for kind in KINDS}}
    summ["false_discovery"] = {m: {"false": sum(r["methods"][m]["false"] for r in results), "slices": sum(r["methods"][m]["slices"] for r in results),
                                   "redundant": sum(r["methods"][m]["redundant"] for r in results)} for m in METHODS}
    for v in summ["false_discovery"].values():
        v["rate"] = v["false"] / max(v["slices"], 1)
    qs = {k: sum(r["queue"][k] for r in results) for k in results[0]["queue"]}
    q = {"items": qs["items"], "share_in_group": qs["in_group"] / max(qs["items"], 1),
         "validated_items": qs["validated_items"], "validated_share_in_group": qs["validated_in_group"] / max(qs["validated_items"], 1),
         "random_share": qs["pool_in_group"] / max(qs["pool"], 1)}
    q["x_random"] = q["share_in_group"] / max(q["random_share"], 1e-12)
    q["validated_x_random"] = q["validated_share_in_group"] / max(q["random_share"], 1e-12)
    per = [r["groups"][k].get("queue_x_random") for r, k in found]
    per = [v for v in per if v is not None and np.isfinite(v)]
    q["found_slice_own_group_x_random_median"] = float(np.median(per)) if per else None
    q["found_slices_with_queue"] = len(per)
    summ["queue"] = q
    secs = pd.DataFrame([r["seconds"] for r in results])
    summ["seconds_mean"] = secs.mean().round(2).to_dict()
    return summ


def markdown(summ: dict, results: list[dict], meta: dict) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.0%}"

    nm = summ["naming"]
    changed = meta["audit_code_digest_end"] != meta["audit_code_digest"]
    q = summ["queue"]
    lines = [f"# Failure audit on planted failure groups ({len(results)} settings, {sum(summ['planted'].values())} planted groups)", "",
             f"Measured {meta['started']} - {meta['finished']} (UTC) on {meta['machine']}; audit code digest {meta['audit_code_digest']}"
             f"{' (changed during the run: ' + meta['audit_code_digest_end'] + ' at the end)' if changed else ''}; "
             f"git HEAD {meta['git_head']}. Rows {meta['rows']}, d {meta['dims']}, {meta['seconds']:.0f} s in all.", "",
             "Found = some slice (audit: a validated one) whose failing members are >= 80% inside the planted group and hold >= 50% "
             "of the group's failing rows.", "",
             "## Recall by kind", "", "| kind | planted | audit | Domino k-means | Domino GMM | metadata group-by |", "|---|---|---|---|---|---|"]
    for kind in (*KINDS, "all"):
        r = summ["recall"][kind]
        n = summ["planted"].get(kind, sum(summ["planted"].values()))
        lines.append(f"| {kind} | {n} | {pct(r['audit'])} | {pct(r['domino_kmeans'])} | {pct(r['domino_gmm'])} | {pct(r['groupby'])} |")
    fd = summ["false_discovery"]
    lines += ["", f"Audit recall counting unvalidated slices too: {pct(summ['audit_recall_any_slice'])}.", "",
              "## False discoveries (slices matching no planted group at precision >= 0.8)", "",
              "| method | slices (audit: validated) | false | rate | redundant (match a group another slice matches) |", "|---|---|---|---|---|"]
    lines += [f"| {m} | {fd[m]['slices']} | {fd[m]['false']} | {pct(fd[m]['rate'])} | {fd[m]['redundant']} |" for m in METHODS]
    lines += ["", "## Naming (audit; the found slice's name contains the planted term)", "",
              f"- named / found: **{nm['named']} / {nm['found']} = {pct(nm['accuracy_given_found'])}**; named / planted: {pct(nm['accuracy_of_planted'])}",
              f"- pairs naming at least one parent: {pct(nm['pair_either_given_found'])} of found pairs", "",
              "| kind | found | named |", "|---|---|---|"]
    lines += [f"| {k} | {v['found']} | {v['named']} |" for k, v in nm["by_kind"].items()]
    lines += ["", "## Look-alike queue (all items pass)", "",
              "| queue | items | share in a planted group | random passing item | x random |", "|---|---|---|---|---|",
              f"| all slices | {q['items']} | {q['share_in_group']:.1%} | {q['random_share']:.1%} | {q['x_random']:.1f} |",
              f"| validated slices | {q['validated_items']} | {q['validated_share_in_group']:.1%} | {q['random_share']:.1%} | {q['validated_x_random']:.1f} |",
              "", f"Found slices' queues in their own group: median {q['found_slice_own_group_x_random_median'] or 0:.1f}x that group's share of the "
              f"passing pool ({q['found_slices_with_queue']} slices with a queue).", "",
              "## Seconds per setting (mean)", "", "| stage | s |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in summ["seconds_mean"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="3 settings (20k rows, all four kinds): a smoke run")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    import subprocess

    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    started, digest = datetime.now(UTC).strftime("%Y-%m-%d %H:%M"), audit_code_digest()
    t0 = time.perf_counter()
    results = []
    sts = settings(a.quick)
    with tempfile.TemporaryDirectory(prefix="audit_planted-") as tmp:
        for st in sts:
            r = one_setting(st, Path(tmp))
            results.append(r)
            print(json.dumps({"seed": st.seed, "rows": st.rows, "dim": st.dim, "kinds": st.kinds,
                              "found": {m: v["found"] for m, v in r["methods"].items()},
                              "named": {k: g["named"] for k, g in r["groups"].items()}, "summary": r["summary"],
                              "seconds": {k: round(v, 1) for k, v in r["seconds"].items()}}), flush=True)
    meta = {"machine": f"{platform.machine()}, Python {platform.python_version()}", "started": started,
            "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"), "git_head": head, "audit_code_digest": digest,
            "audit_code_digest_end": audit_code_digest(), "seconds": time.perf_counter() - t0, "quick": a.quick,
            "rows": f"{min(s.rows for s in sts):,}-{max(s.rows for s in sts):,}", "dims": "/".join(str(d) for d in sorted({s.dim for s in sts}))}
    summ = summarize(results)
    name = "audit_planted"
    (a.out / f"{name}.json").write_text(json.dumps({"meta": meta, "summary": summ, "settings": results}, indent=2, default=float))
    md = markdown(summ, results, meta)
    (a.out / f"{name}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
