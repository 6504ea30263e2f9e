"""A workspace folder: ``store.zarr`` plus ``saes/<run>/`` with everything derived from it."""

from __future__ import annotations

import html
import json
import os
from pathlib import Path
from typing import Any

from sae.errors import StoreError
from sae.store import Store

STORE_NAME = "store.zarr"
SAES_DIR = "saes"


class Workspace:
    """One folder per dataset: the store and the SAE runs trained on it."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def store_path(self) -> Path:
        return self.path / STORE_NAME

    def exists(self) -> bool:
        return self.store_path.exists()

    def open_store(self, mode: str = "r") -> Store:
        """Open the workspace's store, with a hint when the folder is not a workspace."""
        if not self.exists():
            raise StoreError(
                f"{self.path} is not a workspace (no {STORE_NAME} inside); create one with `sae ingest` or `sae demo`"
            )
        return Store.open(self.store_path, mode=mode)

    def sae_runs(self) -> list[Path]:
        """SAE run folders (each holding a ``config.json``), sorted by name."""
        root = self.path / SAES_DIR
        if not root.is_dir():
            return []
        return sorted(p for p in root.iterdir() if (p / "config.json").exists())

    def info(self) -> dict[str, Any]:
        """Summary of the store and of every SAE run (labels included when present)."""
        store = self.open_store()
        runs = []
        for run in self.sae_runs():
            cfg = json.loads((run / "config.json").read_text())
            runs.append(
                {
                    "run": run.name,
                    "arch": cfg.get("arch"),
                    "n_latents": cfg.get("n_latents"),
                    "k": cfg.get("k"),
                    "codes": (run / "codes.zarr").exists(),
                    "labels": any(run.glob("labels*.parquet")),
                }
            )
        return {"workspace": str(self.path), "store": store.summary(), "saes": runs}

    def _repr_html_(self) -> str:
        info = self.info()
        runs = "".join(f"<li>{html.escape(json.dumps(r))}</li>" for r in info["saes"]) or "<li>none yet</li>"
        return f"<div><b>workspace</b> {html.escape(str(self.path))}{self.open_store()._repr_html_()}<ul>{runs}</ul></div>"
