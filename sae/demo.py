"""``sae demo``: build the MNI152 demo workspace and run every stage that exists, printing each headline.

Later stages (train, label, search, audit) register themselves in :data:`STAGES`; each takes the
workspace and the run options and returns a one-line headline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from sae.workspace import Workspace


@dataclass(frozen=True)
class DemoOptions:
    small: bool = False
    rebuild: bool = False


def stage_store(ws: Workspace, opts: DemoOptions) -> str:
    """Stage 1: the MNI152 slices with torchio artifacts, embedded with EfficientNet-Lite0."""
    from sae.datasets.mni import MNIDemoConfig, build_mni_demo

    cfg = MNIDemoConfig.small() if opts.small else MNIDemoConfig()
    store = build_mni_demo(ws.store_path, cfg, overwrite=opts.rebuild)
    meta = store.meta(["orientation", "artifact", "quality_fail"])
    n_art = int((meta["artifact"] != "none").sum())
    return (
        f"{store.n_rows:,} MRI slices ({', '.join(f'{k} {v}' for k, v in meta['orientation'].value_counts().items())}), "
        f"{store.dim}-d {store.encoder.get('name')} embeddings, {n_art:,} with torchio artifacts "
        f"({int(meta['quality_fail'].sum()):,} fail QC)"
    )


STAGES: list[tuple[str, Callable[[Workspace, DemoOptions], str]]] = [("store", stage_store)]


def run_demo(workspace: Path, *, small: bool = False, rebuild: bool = False) -> dict[str, str]:
    """Run every registered stage on the demo workspace; returns {stage: headline}."""
    from sae.cli import print_info

    ws = Workspace(workspace)
    opts = DemoOptions(small=small, rebuild=rebuild)
    headlines = {}
    t_all = time.perf_counter()
    for name, stage in STAGES:
        t0 = time.perf_counter()
        headlines[name] = stage(ws, opts)
        print(f"[{name}] {headlines[name]}  ({time.perf_counter() - t0:.1f} s)", flush=True)
    print(f"demo finished in {time.perf_counter() - t_all:.1f} s; workspace {ws.path}\n")
    print_info(ws)
    return headlines
