"""Train a TopK SAE with a *peer library* on a fixed sequence of batches, time it, and
write the reconstruction of an evaluation set.

Run it with the interpreter of the peers' virtualenv (not the project's own one):

    .bench-venv/bin/python benchmarks/peers/run_peer.py --lib sparsify \
        --batches BATCHES.npy --eval EVAL.npy --n 8192 --k 32 --lr 2e-4 \
        --out RESULT.json --recon RECON.npy [--threads N] [--seed 0]

BATCHES.npy is float32 (steps, batch, d), opened as a memmap; exactly one optimizer step
is taken per batch, in order. EVAL.npy is float32 (rows, d); after training the SAE is put
in eval mode and its reconstruction of EVAL (same shape, float32, input units) is written
to RECON.npy in chunks of 4096 rows under torch.no_grad().

Timing is the same for every library: all of them pull their batches from one
``TimedBatches`` iterator, which stamps ``time.perf_counter()`` each time a batch is
requested. Step i lasts from the request of batch i to the request of batch i+1 (the last
step ends at the next request, or when the library's training call returns), so a step
includes turning the memmapped batch into a tensor (also reported alone as
``load_times_s``) plus whatever the library does per step. ``samples_per_s`` leaves out
the first (warm-up) step.

If a library cannot be imported or driven, RESULT.json gets ``"error": "<one line>"`` and
the process exits with code 3.

Libraries (see ``NOTES`` for what each run did differently):
  sparsify      eai-sparsify ``SparseCoder`` + a copy of one ``Trainer.fit()`` step
  saelens       ``SAETrainer(...).fit()`` on ``TopKTrainingSAE``
  overcomplete  ``overcomplete.sae.TopKSAE`` + ``train_sae``
  naive         plain PyTorch TopK SAE defined below (reference)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
import traceback
import types
from importlib import metadata
from pathlib import Path

# Quiet progress bars of the peers (tqdm >= 4.66 honours this); they are not timed work.
os.environ.setdefault("TQDM_DISABLE", "1")
# Keep wandb (imported by sae_lens) offline and silent; it is never initialised here.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
# Never reach out to the Hugging Face Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

EVAL_CHUNK = 4096
EXIT_CANNOT_DRIVE = 3


class CannotDrive(RuntimeError):
    """The library cannot be run the way the benchmark needs."""


# --------------------------------------------------------------------------- data + timing


class TimedBatches:
    """Yields the pre-made batches as fp32 CPU tensors and time-stamps every request."""

    def __init__(self, batches: np.ndarray):
        self.batches = batches
        self.i = 0
        self.request_times: list[float] = []  # one per batch handed out
        self.load_times: list[float] = []
        self.end_time: float | None = None  # request after the last batch, if any

    def __iter__(self):
        return self

    def __next__(self) -> torch.Tensor:
        t = time.perf_counter()
        if self.i >= len(self.batches):
            if self.end_time is None:
                self.end_time = t
            raise StopIteration
        self.request_times.append(t)
        x = torch.from_numpy(np.array(self.batches[self.i], dtype=np.float32, copy=True))
        self.load_times.append(time.perf_counter() - t)
        self.i += 1
        return x

    def step_times(self, returned_at: float) -> list[float]:
        end = self.end_time if self.end_time is not None else returned_at
        stamps = self.request_times + [end]
        return [b - a for a, b in itertools.pairwise(stamps)]


def reconstruct(fn, eval_x: np.ndarray, out_path: Path) -> None:
    """Write fn(chunk) for every 4096-row chunk of eval_x to out_path (.npy, float32)."""
    out = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.float32, shape=eval_x.shape)
    with torch.no_grad():
        for start in range(0, eval_x.shape[0], EVAL_CHUNK):
            stop = min(start + EVAL_CHUNK, eval_x.shape[0])
            x = torch.from_numpy(np.array(eval_x[start:stop], dtype=np.float32, copy=True))
            y = fn(x)
            if y.shape != x.shape:
                raise CannotDrive(
                    f"reconstruction has shape {tuple(y.shape)}, want {tuple(x.shape)}"
                )
            out[start:stop] = y.detach().to(torch.float32).cpu().numpy()
    out.flush()
    del out


def dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


# --------------------------------------------------------------------------- sparsify


def run_sparsify(args, batches, eval_x, recon_path):
    # NB: importing sparsify prints "Triton not installed, using eager implementation of
    # sparse decoder." on a CPU-only torch; the decoder is then F.embedding_bag.
    import sparsify
    from sparsify import SparseCoder, SparseCoderConfig

    steps, _, d = batches.shape
    torch.manual_seed(args.seed)
    sae = SparseCoder(
        d, SparseCoderConfig(num_latents=args.n, k=args.k), device="cpu", dtype=torch.float32
    )
    sae.train()
    # sparsify's Trainer defaults to optimizer="signum" (ScheduleFreeWrapper(SignSGD));
    # its "adam" option is torch.optim.Adam (bitsandbytes is not installed) with a linear
    # warm-up schedule. Here: plain Adam at --lr, no schedule, like the other libraries.
    opt = torch.optim.Adam(sae.parameters(), lr=args.lr)

    data = TimedBatches(batches)
    first = True
    for x in data:
        if first:
            # Trainer.fit(): on the first step set b_dec to the mean of the batch.
            sae.b_dec.data = x.mean(0).to(sae.dtype)
            first = False
        # Trainer.fit() hook, autoencoding with normalize_decoder=True:
        sae.set_decoder_norm_to_unit_norm()
        # auxk_alpha defaults to 0 in TrainConfig, so the Trainer passes dead_mask=None and
        # the loss is fvu + 0 * auxk + multi_topk_fvu / 8 (= 0 without multi_topk).
        out = sae(x)
        out.fvu.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
    returned = time.perf_counter()

    sae.eval()
    reconstruct(lambda xb: sae(xb).sae_out, eval_x, recon_path)
    notes = (
        "sparsify.SparseCoder(d, SparseCoderConfig(num_latents=n, k=k), fp32, cpu); hand loop "
        "copying one Trainer.fit() step: b_dec <- mean of first batch; per step "
        "set_decoder_norm_to_unit_norm(), out=sae(x), out.fvu.backward() (Trainer default "
        "auxk_alpha=0 -> no AuxK, no dead-latent tracking), "
        "remove_gradient_parallel_to_decoder_directions(), Adam.step(), zero_grad(). "
        "Optimizer: torch.optim.Adam(lr) with no warm-up/schedule (sparsify's Trainer "
        "defaults to signum = ScheduleFreeWrapper(SignSGD); its 'adam' option adds a "
        "linear warm-up). Trainer's torch.set_float32_matmul_precision('high') NOT set "
        "(pure fp32). Sparse decoder = eager F.embedding_bag (no Triton on CPU); fused "
        "encoder with index_add backward. Recon: sae(x).sae_out in eval mode."
    )
    return sae, data, returned, sparsify.__version__, notes


# --------------------------------------------------------------------------- SAELens


def run_saelens(args, batches, eval_x, recon_path):
    import sae_lens
    from sae_lens import SAETrainer
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.topk_sae import TopKTrainingSAE, TopKTrainingSAEConfig

    steps, batch, d = batches.shape
    torch.manual_seed(args.seed)
    sae_cfg = TopKTrainingSAEConfig(
        d_in=d,
        d_sae=args.n,
        k=args.k,
        dtype="float32",
        device="cpu",
        normalize_activations="none",  # library default: no input scaling
    )
    sae = TopKTrainingSAE(sae_cfg)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=steps * batch,
        train_batch_size_samples=batch,
        lr=args.lr,
        lr_end=args.lr / 10,  # the runner config's default; unused by "constant"
        lr_scheduler_name="constant",
        lr_warm_up_steps=0,
        lr_decay_steps=0,
        device="cpu",
        autocast=False,
        n_checkpoints=0,
        checkpoint_path=None,
        save_final_checkpoint=False,
        logger=LoggingConfig(log_to_wandb=False),
    )
    data = TimedBatches(batches)
    trainer = SAETrainer(cfg=trainer_cfg, sae=sae, data_provider=data, evaluator=None)
    sae = trainer.fit()
    returned = time.perf_counter()
    if len(data.request_times) != steps:
        raise CannotDrive(f"SAETrainer.fit() took {len(data.request_times)} batches, not {steps}")
    if sae.cfg.normalize_activations != "none":
        raise CannotDrive(f"SAE still normalises inputs ({sae.cfg.normalize_activations})")

    sae.eval()
    # normalize_activations="none": the forward pass works in the input's units (and
    # fit() would have folded any estimated scaling factor into the weights anyway).
    reconstruct(sae, eval_x, recon_path)
    c = sae.cfg
    notes = (
        "SAETrainer(SAETrainerConfig(total_training_samples=steps*batch, "
        "train_batch_size_samples=batch, lr, constant schedule, cpu, no autocast, no "
        "wandb/checkpoints), TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d, d_sae=n, k=k, "
        "fp32)), data_provider=iterator over the batches, evaluator=None).fit(). Library "
        f"defaults kept: normalize_activations={c.normalize_activations!r} (no input "
        f"scaling), rescale_acts_by_decoder_norm={c.rescale_acts_by_decoder_norm}, "
        f"decoder_init_norm={c.decoder_init_norm}, apply_b_dec_to_input="
        f"{c.apply_b_dec_to_input}, b_dec init = 0 (not the data mean), "
        f"aux_loss_coefficient={c.aux_loss_coefficient} (AuxK only for latents dead "
        f">{trainer_cfg.dead_feature_window} steps, so 0 in short runs). Loss = MSE summed "
        "over d, mean over batch (not FVU). Per step it also does clip_grad_norm_(1.0), "
        "dense (batch x n) codes and a dense decoder matmul, and firing statistics. "
        "Optimizer: torch.optim.Adam(lr, betas=(0.9, 0.999)) built by SAETrainer. Recon: "
        "sae(x) in eval mode (inputs never scaled)."
    )
    return sae, data, returned, sae_lens.__version__, notes


# --------------------------------------------------------------------------- overcomplete


def _import_overcomplete_sae():
    """Import overcomplete.sae without a working torchvision.

    ``import overcomplete.sae`` first runs ``overcomplete/__init__.py``, which imports
    ``overcomplete.models`` (``from torchvision import transforms`` at module level; the
    transforms are only used inside the vision-model constructors) and
    ``overcomplete.visualization`` (its cmaps module calls ``matplotlib.cm.get_cmap``,
    removed in matplotlib >= 3.9, at import time). torchvision is deliberately absent from
    the bench venv (it breaks torch 2.13.0), so we put minimal stub modules for
    ``torchvision`` / ``torchvision.transforms`` and for ``overcomplete.visualization`` into
    sys.modules. Nothing from them is used by the SAE code that runs here.
    """
    if "torchvision" not in sys.modules:
        # Never import the real torchvision here, even if one appears: a mismatched build
        # can break torch itself.
        tv = types.ModuleType("torchvision")
        tv.__path__ = []  # a package, so submodule imports resolve to the stubs below
        tr = types.ModuleType("torchvision.transforms")

        class _Unavailable:
            def __init__(self, *a, **kw):
                raise ImportError("torchvision is stubbed out in the bench runner")

        for attr in ("Compose", "Resize", "ToTensor", "Normalize", "CenterCrop"):
            setattr(tr, attr, _Unavailable)
        tr.InterpolationMode = types.SimpleNamespace(BICUBIC="bicubic", BILINEAR="bilinear")
        tv.transforms = tr
        sys.modules["torchvision"] = tv
        sys.modules["torchvision.transforms"] = tr

    if "overcomplete.visualization" not in sys.modules:
        vis = types.ModuleType("overcomplete.visualization")

        def _no_vis(*a, **kw):
            raise ImportError("overcomplete.visualization is stubbed out in the bench runner")

        for attr in ("overlay_top_heatmaps", "evidence_top_images", "zoom_top_images",
                     "contour_top_image"):
            setattr(vis, attr, _no_vis)
        sys.modules["overcomplete.visualization"] = vis

    import overcomplete
    import overcomplete.sae

    return overcomplete, overcomplete.sae


def run_overcomplete(args, batches, eval_x, recon_path):
    overcomplete, ocsae = _import_overcomplete_sae()
    TopKSAE, train_sae = ocsae.TopKSAE, ocsae.train_sae

    steps, _, d = batches.shape
    torch.manual_seed(args.seed)
    sae = TopKSAE(d, nb_concepts=args.n, top_k=args.k, device="cpu")
    opt = torch.optim.Adam(sae.parameters(), lr=args.lr)

    def criterion(x, x_hat, pre_codes, codes, dictionary):
        # The plain MSE criterion of overcomplete's README TopK example.
        return (x - x_hat).square().mean()

    data = TimedBatches(batches)
    train_sae(sae, data, criterion, opt, scheduler=None, nb_epochs=1, clip_grad=1.0,
              monitoring=0, device="cpu")
    returned = time.perf_counter()
    if len(data.request_times) != steps:
        raise CannotDrive(f"train_sae took {len(data.request_times)} batches, not {steps}")

    sae.eval()  # fuses the (l2-normalised) dictionary
    reconstruct(lambda xb: sae(xb)[2], eval_x, recon_path)
    version = getattr(overcomplete, "__version__", None) or dist_version("overcomplete")
    notes = (
        "overcomplete.sae.TopKSAE(d, nb_concepts=n, top_k=k) (default 'linear' encoder: "
        "Linear(d, n) with bias, ReLU, then top-k of the ReLU'd codes scattered into a dense "
        "(batch x n) code; DictionaryLayer re-projects rows onto the unit l2 sphere in every "
        "training forward; NO decoder/pre-encoder bias b_dec, so the data mean must be "
        "carried by the codes) trained with overcomplete.sae.train_sae(model, "
        "iterator over the batches, criterion=mean((x-x_hat)^2) (README example), "
        "torch.optim.Adam(lr), nb_epochs=1, clip_grad=1.0 (library default), monitoring=0). "
        "Per step: clip_grad_norm_, dense decoder matmul, dead-code tracker update. "
        "Imported with stub modules for torchvision/torchvision.transforms and "
        "overcomplete.visualization (see _import_overcomplete_sae). Recon: model(x)[2] in "
        "eval mode."
    )
    return sae, data, returned, version, notes


# --------------------------------------------------------------------------- naive


class NaiveTopKSAE(torch.nn.Module):
    """Reference TopK SAE in plain PyTorch (dense codes)."""

    def __init__(self, d: int, n: int, k: int):
        super().__init__()
        self.k = k
        w = torch.empty(n, d)
        torch.nn.init.kaiming_uniform_(w, a=5 ** 0.5)  # nn.Linear's default init
        self.W_enc = torch.nn.Parameter(w)
        self.b_enc = torch.nn.Parameter(torch.zeros(n))
        self.W_dec = torch.nn.Parameter(w.clone())
        self.b_dec = torch.nn.Parameter(torch.zeros(d))
        self.normalize_decoder()

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        eps = torch.finfo(self.W_dec.dtype).eps
        self.W_dec.data /= self.W_dec.data.norm(dim=1, keepdim=True) + eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = (x - self.b_dec) @ self.W_enc.T + self.b_enc
        vals, idx = pre.topk(self.k, dim=-1, sorted=False)
        code = torch.zeros_like(pre).scatter(-1, idx, vals.relu())
        return code @ self.W_dec + self.b_dec


def run_naive(args, batches, eval_x, recon_path):
    steps, _, d = batches.shape
    torch.manual_seed(args.seed)
    sae = NaiveTopKSAE(d, args.n, args.k)
    opt = torch.optim.Adam(sae.parameters(), lr=args.lr)

    data = TimedBatches(batches)
    first = True
    for x in data:
        if first:
            sae.b_dec.data = x.mean(0)
            first = False
        x_hat = sae(x)
        fvu = (x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
        fvu.backward()
        opt.step()
        opt.zero_grad()
        sae.normalize_decoder()
    returned = time.perf_counter()

    sae.eval()
    reconstruct(sae, eval_x, recon_path)
    notes = (
        "plain PyTorch reference: W_enc (n x d, nn.Linear init), b_enc = 0, W_dec = W_enc "
        "copy with unit rows, b_dec = mean of first batch; pre = (x - b_dec) @ W_enc.T + "
        "b_enc, dense topk(k), relu(values) scattered into a dense (batch x n) code, x_hat = "
        "code @ W_dec + b_dec; loss = FVU (sum sq. error / sum sq. deviation from batch "
        "mean); torch.optim.Adam(lr); decoder rows renormalised after each step (no "
        "gradient projection)."
    )
    return sae, data, returned, f"torch {torch.__version__}", notes


DISTRIBUTIONS = {  # for "version" when the run fails before the library reports one
    "sparsify": "eai-sparsify",
    "saelens": "sae-lens",
    "overcomplete": "overcomplete",
    "naive": "torch",
}

RUNNERS = {
    "sparsify": run_sparsify,
    "saelens": run_saelens,
    "overcomplete": run_overcomplete,
    "naive": run_naive,
}


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lib", required=True, choices=sorted(RUNNERS))
    p.add_argument("--batches", required=True, type=Path)
    p.add_argument("--eval", required=True, type=Path)
    p.add_argument("--n", type=int, default=8192)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--lr", type=float, required=True)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--recon", required=True, type=Path)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)

    batches = np.load(args.batches, mmap_mode="r")
    eval_x = np.load(args.eval, mmap_mode="r")
    if batches.ndim != 3 or eval_x.ndim != 2 or eval_x.shape[1] != batches.shape[2]:
        p.error(f"want BATCHES (steps, batch, d) and EVAL (rows, d); "
                f"got {batches.shape}, {eval_x.shape}")
    steps, batch, d = (int(s) for s in batches.shape)

    result = {
        "lib": args.lib, "version": None, "steps": steps, "batch": batch, "d": d,
        "n": args.n, "k": args.k, "lr": args.lr,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.recon.parent.mkdir(parents=True, exist_ok=True)

    try:
        _, data, returned, version, notes = RUNNERS[args.lib](args, batches, eval_x, args.recon)
    except Exception as exc:  # the library could not be driven
        traceback.print_exc()
        msg = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
        result.update({
            "version": dist_version(DISTRIBUTIONS[args.lib]),
            "threads": torch.get_num_threads(),
            "error": msg,
        })
        args.recon.unlink(missing_ok=True)  # never leave a partial reconstruction behind
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"run_peer: {args.lib}: {msg}", file=sys.stderr)
        return EXIT_CANNOT_DRIVE

    step_times = data.step_times(returned)
    timed = step_times[1:]
    result.update({
        "version": version,
        "step_times_s": step_times,
        "samples_per_s": (batch * len(timed) / sum(timed)) if timed and sum(timed) > 0 else None,
        "threads": torch.get_num_threads(),
        "notes": notes,
        "load_times_s": data.load_times,  # part of each step time (memmap -> tensor copy)
    })
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"run_peer: {args.lib} {version}: {steps} steps x {batch}, "
          f"{result['samples_per_s'] or float('nan'):.1f} samples/s "
          f"(threads={result['threads']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
