"""The encoder interface and an adapter that turns any torch module into an encoder."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from sae._progress import tqdm
from sae.errors import SaeError


class Encoder:
    """Maps a list of items (images or texts) to an ``(n, dim)`` float32 array.

    Subclasses set ``name`` and ``dim`` and implement :meth:`_encode_batch`; batching, progress
    and the float32 contract live here.
    """

    name: str = "encoder"
    dim: int = 0
    batch_size: int = 32

    def _encode_batch(self, items: Sequence[Any]) -> np.ndarray:
        raise NotImplementedError

    def encode(self, items: Sequence[Any], *, batch_size: int | None = None, progress: bool = True) -> np.ndarray:
        """Encode ``items`` in batches; returns float32 ``(len(items), dim)``."""
        items = list(items)
        bs = int(batch_size or self.batch_size)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        with tqdm(total=len(items), desc=f"encode ({self.name})", unit="item", disable=not progress) as bar:
            for start in range(0, len(items), bs):
                chunk = items[start : start + bs]
                vectors = np.asarray(self._encode_batch(chunk), dtype=np.float32)
                if vectors.shape != (len(chunk), self.dim):
                    raise SaeError(f"{self.name} returned shape {vectors.shape}, expected {(len(chunk), self.dim)}")
                out[start : start + len(chunk)] = vectors
                bar.update(len(chunk))
        return out

    def describe(self) -> dict:
        """What goes into the store's ``encoder`` attribute."""
        return {"name": self.name, "dim": self.dim}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"


class TorchModuleEncoder(Encoder):
    """Any ``torch.nn.Module``: ``preprocess`` turns a list of items into a batch tensor.

    The module's output is flattened per item (add pooling inside the module if it returns maps).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        dim: int,
        preprocess: Callable[[Sequence[Any]], torch.Tensor] | None = None,
        name: str = "torch-module",
        batch_size: int = 32,
        device: str = "cpu",
    ):
        self.module = module.eval().to(device)
        self.dim = int(dim)
        self.preprocess = preprocess or (lambda items: torch.as_tensor(np.stack(items), dtype=torch.float32))
        self.name = name
        self.batch_size = batch_size
        self.device = device

    @torch.inference_mode()
    def _encode_batch(self, items: Sequence[Any]) -> np.ndarray:
        x = self.preprocess(items).to(self.device)
        return self.module(x).reshape(len(items), -1).float().cpu().numpy()
