"""Sparse encoder kernels: select a few latents per row and back-propagate only through them.

The encoder forward is one dense matmul; everything after it touches only the selected latents.
The backward of the encoder is a sparse (latents x rows) by dense (rows x d) product, and the
decoder is an ``embedding_bag`` over the selected rows of ``W_dec``, so a step costs little more
than the unavoidable forward matmul (this is what makes EleutherAI sparsify fast; we go further by
fusing the AuxK selection into the same pass and by building the sparse gradient in CSR form).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F

Selector = Callable[[torch.Tensor], "tuple[torch.Tensor, torch.Tensor | None]"]
"""Maps pre-activations (B x n) to selected latent indices (B x m, int64) and an optional keep mask."""


def topk_selector(k: int) -> Selector:
    """Per-row top-k: each row's ``k`` largest pre-activations (unsorted), no keep mask."""

    def select(pre: torch.Tensor) -> tuple[torch.Tensor, None]:
        return pre.topk(k, dim=1, sorted=False).indices, None

    return select


def batch_topk_indices(pre: torch.Tensor, k: int, row_cap: int, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch top-k: the ``B * k`` largest positive pre-activations of the whole batch.

    Each row first keeps its ``row_cap * k`` largest candidates (a row rarely needs more), then the
    batch-wide top ``B * k`` among the candidates survive. Returns (indices B x m, keep mask B x m).
    """
    b, n = pre.shape
    m = min(n, row_cap * k)
    cand_vals, cand_idx = pre.topk(m, dim=1, sorted=False)
    flat = cand_vals.reshape(-1)
    total = min(b * k, flat.numel())
    cutoff = flat.topk(total, sorted=False).values.min()
    keep = (cand_vals >= cutoff) & (cand_vals > 0)
    return cand_idx + offset, keep


class SparseEncode(torch.autograd.Function):
    """``relu(x @ W_enc.T + b_enc)`` at selected latents, with a sparse backward.

    ``main`` picks the latents that form the code; ``aux`` (optional) picks extra latents (AuxK's
    dead latents) whose values get gradients too. Both read the same pre-activations.
    """

    @staticmethod
    def forward(ctx, x, w_enc, b_enc, main, aux=None, dead_mask=None):
        pre = torch.addmm(b_enc, x, w_enc.t())
        idx, keep = main(pre)
        vals = pre.gather(1, idx).to(x.dtype).clamp_min_(0)  # input precision even under bf16 autocast
        if keep is not None:
            vals = vals * keep
        aux_idx = aux_vals = None
        if aux is not None and dead_mask is not None and bool(dead_mask.any()):
            dead = dead_mask.nonzero().squeeze(1)  # AuxK ranks only the dead latents' columns (few, usually)
            sub = pre.index_select(1, dead)
            local, _ = aux(sub)
            aux_idx = dead[local]
            aux_vals = sub.gather(1, local).to(x.dtype).clamp_min_(0)
        saved_aux_idx = aux_idx if aux_idx is not None else idx[:, :0]
        saved_aux_vals = aux_vals if aux_vals is not None else vals[:, :0]
        ctx.save_for_backward(x, idx, vals, saved_aux_idx, saved_aux_vals)
        ctx.n_latents = w_enc.shape[0]
        ctx.mark_non_differentiable(idx)
        if aux_idx is None:
            aux_idx = idx[:, :0]
            aux_vals = vals[:, :0]
        else:
            ctx.mark_non_differentiable(aux_idx)
        return vals, idx, aux_vals, aux_idx

    @staticmethod
    def backward(ctx, g_vals, _g_idx, g_aux, _g_aux_idx):
        x, idx, vals, aux_idx, aux_vals = ctx.saved_tensors
        g = g_vals * (vals > 0)
        cols = idx
        if aux_idx.shape[1] and g_aux is not None:
            g = torch.cat([g, g_aux * (aux_vals > 0)], dim=1)
            cols = torch.cat([idx, aux_idx], dim=1)
        grad_w = grad_b = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            grad_w, grad_b = sparse_outer(g, cols, x, ctx.n_latents)
        grad_x = None
        if ctx.needs_input_grad[0]:
            raise RuntimeError("SparseEncode does not differentiate with respect to its input")
        return grad_x, grad_w, grad_b, None, None, None


def sparse_outer(g: torch.Tensor, cols: torch.Tensor, x: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``G.T @ x`` and ``G.sum(0)`` for a sparse B x n matrix G given as (values g, column indices cols)."""
    b, m = g.shape
    flat_cols = cols.reshape(-1)
    flat_g = g.reshape(-1)
    grad_b = torch.zeros(n, dtype=g.dtype, device=g.device).index_add_(0, flat_cols, flat_g)
    rows = torch.arange(b, device=g.device).repeat_interleave(m)
    order = torch.argsort(flat_cols, stable=True)
    crow = torch.zeros(n + 1, dtype=torch.int64, device=g.device)
    crow[1:] = torch.bincount(flat_cols, minlength=n).cumsum(0)
    with warnings.catch_warnings():  # torch warns once per process that CSR support is "beta"; we rely only on CSR @ dense
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        gt = torch.sparse_csr_tensor(crow, rows[order], flat_g[order], size=(n, b), check_invariants=False)
    grad_w = gt @ x
    return grad_w, grad_b


class SparseDecode(torch.autograd.Function):
    """``sum_j vals[:, j] * W_dec[idx[:, j]]`` with a sparse backward for ``W_dec``.

    ``embedding_bag``'s own backward zero-fills and scatters a dense n x d gradient row by row; the
    CSR product here is several times faster on CPU.
    """

    @staticmethod
    def forward(ctx, vals, idx, w_dec):
        ctx.save_for_backward(vals, idx, w_dec)
        return F.embedding_bag(idx, w_dec, per_sample_weights=vals, mode="sum")

    @staticmethod
    def backward(ctx, g_out):
        vals, idx, w_dec = ctx.saved_tensors
        g_vals = g_w = None
        if ctx.needs_input_grad[0]:  # the native per-sample-weights backward is the fast part of embedding_bag
            with torch.enable_grad():
                v = vals.detach().requires_grad_()
                out = F.embedding_bag(idx, w_dec.detach(), per_sample_weights=v, mode="sum")
                (g_vals,) = torch.autograd.grad(out, v, g_out)
        if ctx.needs_input_grad[2]:
            g_w, _ = sparse_outer(vals, idx, g_out.contiguous(), w_dec.shape[0])
        return g_vals, None, g_w


def decode(vals: torch.Tensor, idx: torch.Tensor, w_dec: torch.Tensor, b_dec: torch.Tensor | None) -> torch.Tensor:
    """``sum_j vals[:, j] * W_dec[idx[:, j]] (+ b_dec)`` without materialising the dense code."""
    if w_dec.device.type == "cpu" and (vals.requires_grad or w_dec.requires_grad):
        out = SparseDecode.apply(vals, idx, w_dec)
    else:
        out = F.embedding_bag(idx, w_dec, per_sample_weights=vals, mode="sum")
    return out + b_dec if b_dec is not None else out
