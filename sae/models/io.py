"""Save and load an SAE run folder: ``model.safetensors`` (scale folded in) + ``config.json``."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from sae._io import atomic_path, atomic_write_text
from sae.errors import SaeError
from sae.models.base import SparseAutoencoder
from sae.models.config import SAEConfig

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def save_sae(model: SparseAutoencoder, folder: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write the folded weights and the config (plus ``extra``: training config, store fingerprint...)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    folded = model.folded()
    tensors = {k: v.detach().cpu().contiguous() for k, v in folded.state_dict().items()}
    with atomic_path(folder / MODEL_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"arch": model.cfg.arch})
        digest = file_digest(tmp)
    doc = {**model.cfg.to_dict(), "input_scale": float(model.scale), "scale_folded": True, "model_digest": digest, **(extra or {})}
    atomic_write_text(folder / CONFIG_FILE, json.dumps(doc, indent=2))
    return folder


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 (first 16 bytes, hex) of a file's content: the identity of a saved model."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:32]


def model_digest(folder: str | os.PathLike) -> str:
    """The digest of a run folder's model: recorded in its config.json, or computed (runs saved before it was recorded)."""
    doc = read_config(folder)
    return str(doc.get("model_digest") or file_digest(Path(folder) / MODEL_FILE))


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / CONFIG_FILE
    if not path.exists():
        raise SaeError(f"no SAE at {folder} (missing {CONFIG_FILE}); train one with `sae train`")
    return json.loads(path.read_text())


def load_sae(folder: str | os.PathLike, device: str = "cpu") -> tuple[SparseAutoencoder, dict[str, Any]]:
    """Load a saved SAE (folded: feeds on raw embeddings) and its config document."""
    doc = read_config(folder)
    cfg = SAEConfig.from_dict(doc)
    model = SparseAutoencoder(cfg, device=device)
    state = load_file(str(Path(folder) / MODEL_FILE), device=str(device))
    missing = set(model.state_dict()) - set(state)
    if missing:
        raise SaeError(f"{folder}/{MODEL_FILE} lacks tensors {sorted(missing)}")
    model.load_state_dict(state)
    model.eval()
    return model, doc
