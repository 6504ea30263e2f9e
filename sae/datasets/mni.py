"""The built-in demo: real MRI slices from the MNI152 T1 template, degraded with torchio artifacts.

The template and its grey/white-matter maps ship inside nilearn, so the demo needs no download.
Pseudo-subjects are random affine + gamma variants of the template; each is sliced in all three
orientations, a seeded share of slices gets a realistic MRI artifact (motion, ghosting, spike, bias
field, noise, blur) at one of two severities, and every slice is embedded with EfficientNet-Lite0.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sae._progress import tqdm
from sae.errors import StoreError
from sae.store import Store

ARTIFACTS = ("motion", "ghosting", "spike", "bias_field", "noise", "blur")
SEVERITIES = ("mild", "severe")
ORIENTATIONS = ("axial", "coronal", "sagittal")
_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}
_REGION_NAMES = {
    "axial": ("inferior", "mid", "superior"),
    "coronal": ("posterior", "mid", "anterior"),
}


@dataclass(frozen=True)
class MNIDemoConfig:
    """Everything that determines the demo dataset; its hash keys the cache."""

    n_volumes: int = 32
    """Pseudo-subjects: random affine (scale, rotation, shift) + gamma variants of the template."""
    stride: int = 2
    """Take every ``stride``-th slice (mm) along each axis."""
    min_brain_fraction: float = 0.06
    """Skip slices whose brain mask covers less than this share of the slice."""
    artifact_share: float = 0.45
    """Share of slices degraded by one artifact (uniform over types and severities)."""
    canvas: int = 240
    """Slices are centred on a square canvas of this many pixels (1 mm each)."""
    image_size: int = 128
    """Encoder input size (EfficientNet-Lite0 runs at ~90-120 images/s at 128 px on 2 cores, ~45 at 160 px)."""
    thumb_size: int = 96
    seed: int = 0

    @classmethod
    def small(cls, **overrides) -> MNIDemoConfig:
        """A few hundred images, built in seconds (for tests and notebooks in CI)."""
        return replace(cls(n_volumes=3, stride=5, image_size=128, thumb_size=64), **overrides)

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


def load_template() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The MNI152 T1 template and its GM / WM probability maps (1 mm, bundled with nilearn)."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1).get_fdata().astype(np.float32)
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata().astype(np.float32)
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata().astype(np.float32)
    return t1 / max(float(t1.max()), 1e-6), gm, wm


def pseudo_subject(t1, gm, wm, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One random affine (+/-8% scale, +/-6 deg, +/-4 mm) and gamma variant; maps move with the image."""
    import torchio as tio

    torch.manual_seed(int(rng.integers(2**31)))
    subject = tio.Subject(
        t1=tio.ScalarImage(tensor=torch.from_numpy(t1)[None]),
        gm=tio.ScalarImage(tensor=torch.from_numpy(gm)[None]),
        wm=tio.ScalarImage(tensor=torch.from_numpy(wm)[None]),
    )
    out = tio.RandomAffine(scales=0.08, degrees=6, translation=4)(subject)
    gamma = float(np.exp(rng.uniform(-0.25, 0.25)))
    img = np.clip(out.t1.data[0].numpy(), 0, None) ** gamma
    return img.astype(np.float32), out.gm.data[0].numpy(), out.wm.data[0].numpy()


def _to_canvas(slice2d: np.ndarray, canvas: int) -> np.ndarray:
    """Rotate so anterior / superior is up and centre on a square canvas."""
    img = np.rot90(slice2d)
    out = np.zeros((canvas, canvas), dtype=np.float32)
    h, w = min(img.shape[0], canvas), min(img.shape[1], canvas)
    y0, x0 = (canvas - h) // 2, (canvas - w) // 2
    iy, ix = (img.shape[0] - h) // 2, (img.shape[1] - w) // 2
    out[y0 : y0 + h, x0 : x0 + w] = img[iy : iy + h, ix : ix + w]
    return out


def region_name(orientation: str, position: float) -> str:
    """Coarse anatomical region of a slice from its normalised position within the brain."""
    if orientation == "sagittal":
        return "medial" if abs(position - 0.5) < 0.2 else "lateral"
    names = _REGION_NAMES[orientation]
    return names[min(2, int(position * 3))]


def iter_slices(t1, gm, wm, cfg: MNIDemoConfig) -> Iterator[dict]:
    """Clean slices of one volume with their anatomical metadata."""
    brain = t1 > 0.05
    for orientation in ORIENTATIONS:
        axis = _AXIS[orientation]
        extent = np.flatnonzero(brain.any(axis=tuple(a for a in range(3) if a != axis)))
        lo, hi = int(extent.min()), int(extent.max())
        for index in range(lo, hi + 1, cfg.stride):
            take = lambda v, axis=axis, index=index: np.moveaxis(v, axis, 0)[index]
            mask = take(brain)
            if mask.mean() < cfg.min_brain_fraction:
                continue
            position = (index - lo) / max(1, hi - lo)
            yield {
                "orientation": orientation,
                "slice_index": index,
                "position": round(float(position), 4),
                "region": region_name(orientation, position),
                "brain_fraction": float(mask.mean()),
                "gm_fraction": float(take(gm)[mask].mean()),
                "wm_fraction": float(take(wm)[mask].mean()),
                "image": _to_canvas(take(t1), cfg.canvas),
            }


def _motion(severe: bool, rng: np.random.Generator):
    """In-plane rigid motion during acquisition (k-space segments from moved copies), as real scans show."""
    import torchio as tio

    n = int(rng.integers(3, 5)) if severe else 2
    magnitude = rng.uniform(7, 10) if severe else rng.uniform(2.5, 4)
    degrees = np.zeros((n, 3))
    degrees[:, 0] = rng.uniform(-magnitude, magnitude, n)  # slices are laid out 1 x 1 x H x W: axis 0 is normal
    translation = np.zeros((n, 3))
    translation[:, 1:] = rng.uniform(-magnitude, magnitude, (n, 2))
    times = np.sort(rng.uniform(0.15, 0.85, n))
    return tio.Motion(degrees=degrees, translation=translation, times=times, image_interpolation="linear")


def artifact_transform(artifact: str, severity: str, rng: np.random.Generator):
    """The torchio transform for one artifact at one severity (2-D slices laid out as 1 x 1 x H x W)."""
    import torchio as tio

    severe = severity == "severe"
    if artifact == "motion":
        return _motion(severe, rng)
    if artifact == "ghosting":
        return tio.RandomGhosting(num_ghosts=(4, 8), axes=(1, 2), intensity=(0.6, 0.9) if severe else (0.25, 0.4))
    if artifact == "spike":
        return tio.RandomSpike(num_spikes=(2, 4) if severe else 1, intensity=(0.8, 1.2) if severe else (0.3, 0.5))
    if artifact == "bias_field":
        return tio.RandomBiasField(coefficients=(0.6, 0.9) if severe else (0.25, 0.4), order=3)
    if artifact == "noise":
        return tio.RandomNoise(std=(0.08, 0.12) if severe else (0.03, 0.05))
    if artifact == "blur":
        lo, hi = (2.0, 3.0) if severe else (0.8, 1.2)
        return tio.RandomBlur(std=(0, 0, lo, hi, lo, hi))  # type: ignore[arg-type]  # per-axis ranges: documented, not in its annotation
    raise ValueError(f"unknown artifact {artifact!r}; known: {ARTIFACTS}")


def degrade(image: np.ndarray, artifact: str, severity: str, seed: int) -> np.ndarray:
    """Apply one seeded torchio artifact to a 2-D slice, rescaled like a scanner would, clipped to [0, 1]."""
    import torchio as tio

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    tensor = torch.from_numpy(np.ascontiguousarray(image)).reshape(1, 1, *image.shape)
    out = artifact_transform(artifact, severity, rng)(tio.ScalarImage(tensor=tensor)).data.reshape(image.shape).numpy()
    ref, got = np.percentile(image, 99.5), np.percentile(np.abs(out), 99.5)
    if got > 1e-6:
        out = out * (ref / got)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def assign_artifacts(n: int, share: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Balanced, shuffled artifact and severity labels for ``n`` slices."""
    n_bad = int(round(n * share))
    combos = [(a, s) for a in ARTIFACTS for s in SEVERITIES]
    labels = [combos[i % len(combos)] for i in range(n_bad)] + [("none", "none")] * (n - n_bad)
    order = rng.permutation(n)
    artifact = np.array([labels[i][0] for i in order], dtype=object)
    severity = np.array([labels[i][1] for i in order], dtype=object)
    return artifact, severity


_TEMPLATE: tuple | None = None


def _template_cached():
    global _TEMPLATE
    if _TEMPLATE is None:
        _TEMPLATE = load_template()
    return _TEMPLATE


def volume_slices(v: int, cfg: MNIDemoConfig) -> tuple[list[dict], np.ndarray]:
    """Clean slices of pseudo-subject ``v`` (volume 0 is the template itself); seeded by (seed, v)."""
    t1, gm, wm = _template_cached()
    rng = np.random.default_rng([cfg.seed, 1, v])
    vt1, vgm, vwm = (t1, gm, wm) if v == 0 else pseudo_subject(t1, gm, wm, rng)
    records, images = [], []
    for rec in iter_slices(vt1, vgm, vwm, cfg):
        images.append(rec.pop("image"))
        rec["volume"] = f"sub-{v:02d}"
        records.append(rec)
    return records, np.stack(images)


def _degrade_many(items: list[tuple[np.ndarray, str, str, int]]) -> list[np.ndarray]:
    return [degrade(*item) for item in items]


def _init_worker() -> None:
    torch.set_num_threads(1)


def _pool(workers: int):
    """A process pool (spawned, so it is safe after torch/OpenMP started), or None to run inline."""
    if workers <= 1:
        return None
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_init_worker)


def generate_slices(cfg: MNIDemoConfig, progress: bool = True, workers: int | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """All slices of all pseudo-subjects: metadata table and float images (N x canvas x canvas).

    Volumes and artifacts are produced in ``workers`` processes (default: one per core when the
    config has at least 4 volumes); results do not depend on the number of workers.
    """
    workers = workers if workers is not None else (min(os.cpu_count() or 1, 4) if cfg.n_volumes >= 4 else 1)
    pool = _pool(workers)
    try:
        mapper = pool.map if pool else map
        parts = list(tqdm(mapper(volume_slices, range(cfg.n_volumes), [cfg] * cfg.n_volumes), total=cfg.n_volumes,
                          desc="MNI152 pseudo-subjects", disable=not progress))
        meta = pd.DataFrame.from_records([r for recs, _ in parts for r in recs])
        images = np.concatenate([imgs for _, imgs in parts])
        rng = np.random.default_rng([cfg.seed, 2])
        artifact, severity = assign_artifacts(len(meta), cfg.artifact_share, rng)
        seeds = rng.integers(2**31, size=len(meta))
        todo = np.flatnonzero(artifact != "none")
        chunks = [todo[i : i + 64] for i in range(0, len(todo), 64)]
        jobs = [[(images[i], artifact[i], severity[i], int(seeds[i])) for i in chunk] for chunk in chunks]
        for chunk, out in zip(chunks, tqdm(mapper(_degrade_many, jobs), total=len(jobs), desc="torchio artifacts", disable=not progress)):
            images[chunk] = np.stack(out)
    finally:
        if pool:
            pool.shutdown()
    meta["artifact"] = artifact
    meta["severity"] = severity
    meta["quality_fail"] = meta["severity"].eq("severe")
    meta.insert(0, "id", [f"{v}_{o[:3]}_{i:03d}" for v, o, i in zip(meta["volume"], meta["orientation"], meta["slice_index"], strict=True)])
    cols = ["id", "volume", "orientation", "slice_index", "position", "region", "brain_fraction",
            "gm_fraction", "wm_fraction", "artifact", "severity", "quality_fail"]
    return meta[cols], images


def build_mni_demo(
    dest: str | Path,
    cfg: MNIDemoConfig | None = None,
    *,
    encoder=None,
    overwrite: bool = False,
    progress: bool = True,
) -> Store:
    """Build (or reuse, when the cached config matches) the demo store at ``dest``."""
    from sae.encoders import EfficientNetLite0Encoder, thumbnail

    cfg = cfg or MNIDemoConfig()
    dest = Path(dest)
    cached = _cached(dest, cfg)
    if cached is not None and not overwrite:
        return cached
    t0 = time.perf_counter()
    meta, images = generate_slices(cfg, progress=progress)
    t_slices = time.perf_counter() - t0
    encoder = encoder or EfficientNetLite0Encoder(image_size=cfg.image_size)
    embeddings = encoder.encode(list(images), progress=progress)
    t_embed = time.perf_counter() - t0 - t_slices
    thumbs = np.stack([thumbnail(im, cfg.thumb_size) for im in images])
    provenance = {
        "dataset": "mni152-demo",
        "source": "nilearn MNI152 T1 template (1 mm) + GM/WM maps; torchio artifacts",
        "config": asdict(cfg),
        "config_key": cfg.key(),
        "group_key": "volume",
        "timings_s": {"slices_and_artifacts": round(t_slices, 2), "embedding": round(t_embed, 2)},
        "versions": _versions(),
    }
    with Store.create(dest, encoder.dim, encoder=encoder.describe(), provenance=provenance, overwrite=True) as store:
        ids = meta["id"].tolist()
        store.append(embeddings, ids, meta.drop(columns=["id"]), images=thumbs)
    return Store.open(dest)


def _cached(dest: Path, cfg: MNIDemoConfig) -> Store | None:
    if not dest.exists():
        return None
    try:
        store = Store.open(dest)
    except StoreError:
        return None
    return store if store.provenance.get("config_key") == cfg.key() else None


def _versions() -> dict[str, str]:
    import nilearn
    import torchio

    return {"nilearn": nilearn.__version__, "torchio": torchio.__version__, "torch": torch.__version__}
