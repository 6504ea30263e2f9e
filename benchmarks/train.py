"""Training benchmark: our trainer vs a naive PyTorch TopK loop vs sparsify, SAELens and overcomplete.

Same data, same batches, same number of samples for every library (BENCHMARKS.md protocol):
synthetic embeddings N x d from planted unit-norm directions (12 active per row), TopK SAE with
n latents and k active, batch 4096, 2 epochs. Reported: samples/s (first step excluded), final FVU
on a held-out set of the same distribution, both as ratios to the fastest peer measured in the same
run, and achieved encoder FLOP/s as a share of this machine's fp32 matmul throughput (measured here).

Peers run in their own virtualenv (``.bench-venv``, see ``benchmarks/README.md``) through
``benchmarks/peers/run_peer.py``; a peer that is missing is skipped with the reason.

    python benchmarks/train.py                      # d=768, n=8192, k=32, batch 4096, 65,536 rows, 2 epochs
    python benchmarks/train.py --rows 16384 --quick # smoke run
    python benchmarks/train.py --memory-check       # also: streaming from a store 3x the memory budget, peak RSS
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sae.models import SAEConfig  # noqa: E402
from sae.train import TrainConfig, Trainer  # noqa: E402

OUT = ROOT / "artifacts" / "benchmarks"
PEERS = ("sparsify", "saelens", "overcomplete")
PEER_PYTHON = ROOT / ".bench-venv" / "bin" / "python"


def make_data(rows: int, d: int, n_true: int, active: int, seed: int = 0) -> np.ndarray:
    """Rows = sparse non-negative combinations of ``n_true`` random unit directions (+ small noise)."""
    rng = np.random.default_rng(seed)
    dirs = rng.standard_normal((n_true, d)).astype(np.float32)
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    x = np.empty((rows, d), np.float32)
    for start in range(0, rows, 8192):
        b = min(8192, rows - start)
        idx = rng.integers(0, n_true, (b, active))
        coef = rng.uniform(0.5, 2.0, (b, active)).astype(np.float32)
        x[start : start + b] = np.einsum("bk,bkd->bd", coef, dirs[idx]) + 0.01 * rng.standard_normal((b, d)).astype(np.float32)
    return x


def matmul_ceiling(b: int, d: int, n: int, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of the encoder-shaped matmul (b x d) @ (d x n) on this machine, now."""
    x, w = torch.randn(b, d), torch.randn(n, d)
    x @ w.T
    best = min(_timed(lambda: x @ w.T) for _ in range(repeats))
    return 2 * b * d * n / best / 1e9


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def fvu(x: np.ndarray, x_hat: np.ndarray) -> float:
    x, x_hat = x.astype(np.float64), x_hat.astype(np.float64)
    return float(((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


def run_ours(batches: np.ndarray, eval_x: np.ndarray, n: int, k: int, lr: float) -> dict:
    """Our trainer on exactly the same batch sequence (shuffle off, no holdout, one pass)."""
    steps, bs, d = batches.shape
    flat = batches.reshape(-1, d)
    trainer = Trainer(SAEConfig(d_in=d, n_latents=n, k=k, arch="topk"),
                      TrainConfig(batch_size=bs, epochs=1, lr=lr, holdout_frac=0.0, shuffle=False, log_every=1, warmup_steps=1, decay_frac=0.0),
                      progress=False)
    model = trainer.fit(flat)
    times = trainer.step_times_
    with torch.no_grad():
        xs = torch.from_numpy(eval_x)
        recon = np.concatenate([model.decode_codes(*model.encode(xs[i : i + 4096])).numpy() for i in range(0, len(xs), 4096)])
    return {"lib": "sae-workbench", "version": "0.1.0", "steps": steps, "batch": bs, "step_times_s": times,
            "samples_per_s": bs * (steps - 1) / sum(times[1:]), "fvu": fvu(eval_x, recon),
            "notes": "sae.train.Trainer (AuxK, dead tracking, grad clipping, decoder projection on)"}


def run_naive(batches: np.ndarray, eval_x: np.ndarray, n: int, k: int, lr: float) -> dict:
    """Plain PyTorch TopK: dense topk + scatter, dense decoder, autograd everywhere."""
    steps, bs, d = batches.shape
    torch.manual_seed(0)
    w = torch.randn(n, d)
    w /= w.norm(dim=1, keepdim=True)
    w_enc, w_dec = torch.nn.Parameter(w.clone()), torch.nn.Parameter(w.clone())
    b_enc, b_dec = torch.nn.Parameter(torch.zeros(n)), torch.nn.Parameter(torch.from_numpy(batches[0].mean(0)))
    opt = torch.optim.Adam([w_enc, w_dec, b_enc, b_dec], lr=lr)

    def forward(x):
        pre = (x - b_dec) @ w_enc.T + b_enc
        vals, idx = pre.topk(k, dim=1)
        code = torch.zeros_like(pre).scatter(1, idx, vals.relu())
        return code @ w_dec + b_dec

    times = []
    for s in range(steps):
        x = torch.from_numpy(np.ascontiguousarray(batches[s]))
        t0 = time.perf_counter()
        x_hat = forward(x)
        loss = ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
        loss.backward()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            w_dec /= w_dec.norm(dim=1, keepdim=True)
        times.append(time.perf_counter() - t0)
    with torch.no_grad():
        recon = np.concatenate([forward(torch.from_numpy(eval_x[i : i + 4096])).numpy() for i in range(0, len(eval_x), 4096)])
    return {"lib": "naive-pytorch", "version": torch.__version__, "steps": steps, "batch": bs, "step_times_s": times,
            "samples_per_s": bs * (steps - 1) / sum(times[1:]), "fvu": fvu(eval_x, recon), "notes": "dense topk + scatter, dense decoder"}


def run_peer(lib: str, work: Path, eval_x: np.ndarray, n: int, k: int, lr: float) -> dict:
    if not PEER_PYTHON.exists():
        return {"lib": lib, "skipped": f"no peer virtualenv at {PEER_PYTHON} (see benchmarks/README.md)"}
    out, recon = work / f"{lib}.json", work / f"{lib}_recon.npy"
    cmd = [str(PEER_PYTHON), str(ROOT / "benchmarks" / "peers" / "run_peer.py"), "--lib", lib, "--batches", str(work / "batches.npy"),
           "--eval", str(work / "eval.npy"), "--n", str(n), "--k", str(k), "--lr", str(lr), "--out", str(out), "--recon", str(recon)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if not out.exists():
        return {"lib": lib, "skipped": f"runner failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}"}
    res = json.loads(out.read_text())
    if "error" in res:
        return {"lib": lib, "skipped": res["error"]}
    res["fvu"] = fvu(eval_x, np.load(recon))
    return res


def memory_check(work: Path, d: int, n: int, k: int, batch: int) -> dict:
    """Train from a store 3x larger than the memory budget in a subprocess; report its peak RSS.

    The bound we hold ourselves to: interpreter + libraries (measured after imports) + the data
    budget + model and optimizer state + the step's activation buffers (two batch x n float tensors).
    """
    from sae.datasets.planted import PlantedConfig, make_planted

    budget_gb = 0.5
    rows = int(3 * budget_gb * 2**30 / (d * 4))
    path = work / "big" / "store.zarr"
    make_planted(path, PlantedConfig(n_rows=rows, dim=d, n_concepts=2048, n_revealed=16, seed=0), progress=False)
    code = (
        f"import json, sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "def vm(key):  # /proc: ru_maxrss would include the parent's peak, which survives fork + exec\n"
        "    return int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1])\n"
        "import torch\n"
        "from sae.store import Store; from sae.models import SAEConfig; from sae.train import TrainConfig, Trainer\n"
        "base = vm('VmRSS')\n"
        f"t = Trainer(SAEConfig(d_in={d:d}, n_latents={n:d}, k={k:d}), "
        f"TrainConfig(batch_size={batch:d}, epochs=1, memory_budget_gb={budget_gb:f}, holdout_frac=0.0), progress=False)\n"
        f"t.fit(Store.open({str(path)!r}))\n"
        "print(json.dumps({'base_kb': base, 'peak_kb': vm('VmHWM'), 'in_memory': t.in_memory_}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    res = json.loads(out)
    base_mb, peak_mb = res["base_kb"] / 1024, res["peak_kb"] / 1024
    model_mb = 4 * (2 * n * d + n + d) * 4 / 2**20  # weights, grads and two Adam moments
    act_mb = 2 * batch * n * 4 / 2**20
    bound = base_mb + budget_gb * 1024 + model_mb + act_mb
    return {"store_gb": rows * d * 4 / 2**30, "memory_budget_gb": budget_gb, "in_memory": res["in_memory"], "import_rss_mb": base_mb,
            "peak_rss_mb": peak_mb, "model_and_optimizer_mb": model_mb, "activations_mb": act_mb, "bound_mb": bound,
            "within_bound": peak_mb <= bound}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=65536)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--peers", nargs="*", default=list(PEERS))
    ap.add_argument("--memory-check", action="store_true")
    ap.add_argument("--tag", default="cpu")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    lr = 2e-4 / (args.n / 2**14) ** 0.5
    with tempfile.TemporaryDirectory(dir=OUT.parent) as tmp:
        work = Path(tmp)
        x = make_data(args.rows + 8192, args.d, 4096, 12)
        train_x, eval_x = x[: args.rows], x[args.rows :]
        rng = np.random.default_rng(1)
        order = np.concatenate([rng.permutation(args.rows) for _ in range(args.epochs)])
        steps = len(order) // args.batch
        batches = np.lib.format.open_memmap(work / "batches.npy", mode="w+", dtype=np.float32, shape=(steps, args.batch, args.d))
        for s in range(steps):
            batches[s] = train_x[order[s * args.batch : (s + 1) * args.batch]]
        batches.flush()
        np.save(work / "eval.npy", eval_x)
        ceiling_before = matmul_ceiling(args.batch, args.d, args.n)
        results = [run_ours(batches, eval_x, args.n, args.k, lr), run_naive(batches, eval_x, args.n, args.k, lr)]
        for lib in args.peers:
            results.append(run_peer(lib, work, eval_x, args.n, args.k, lr))
            print(json.dumps({k: v for k, v in results[-1].items() if k != "step_times_s"}), flush=True)
        ceiling = max(ceiling_before, matmul_ceiling(args.batch, args.d, args.n))
        memory = memory_check(work, args.d, args.n, args.k, args.batch) if args.memory_check else None
    summarize(results, ceiling, args, memory)


def summarize(results: list[dict], ceiling: float, args, memory: dict | None) -> None:
    flops_per_sample = 2 * args.d * args.n
    ran = [r for r in results if "skipped" not in r]
    peers = [r for r in ran if r["lib"] not in ("sae-workbench", "naive-pytorch")]
    fastest = max(peers, key=lambda r: r["samples_per_s"]) if peers else None
    ours = next(r for r in ran if r["lib"] == "sae-workbench")
    for r in ran:
        r["encoder_gflops"] = r["samples_per_s"] * flops_per_sample / 1e9
        r["share_of_matmul_ceiling"] = r["encoder_gflops"] / ceiling
        if fastest:
            r["speed_vs_fastest_peer"] = r["samples_per_s"] / fastest["samples_per_s"]
    summary = {"shape": {"rows": args.rows, "d": args.d, "n": args.n, "k": args.k, "batch": args.batch, "epochs": args.epochs},
               "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__},
               "matmul_ceiling_gflops": ceiling, "fastest_peer": fastest["lib"] if fastest else None, "results": results, "memory_check": memory}
    tag = args.tag
    (OUT / f"train_{tag}.json").write_text(json.dumps(summary, indent=2, default=float))
    lines = [f"# Training benchmark ({tag}): TopK d={args.d}, n={args.n}, k={args.k}, batch {args.batch}, {args.rows:,} rows x {args.epochs} epochs",
             "", f"fp32 matmul ceiling measured in this run: {ceiling:.0f} GFLOP/s (encoder-shaped {args.batch}x{args.d} @ {args.d}x{args.n}).", "",
             "| library | version | samples/s | vs fastest peer | held-out FVU | encoder FLOP/s share of ceiling |", "|---|---|---|---|---|---|"]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['lib']} | - | skipped: {r['skipped'][:120]} | | | |")
            continue
        vs = f"{r['speed_vs_fastest_peer']:.2f}x" if fastest else "-"
        lines.append(f"| {r['lib']} | {r.get('version', '')} | {r['samples_per_s']:,.0f} | {vs} | {r['fvu']:.4f} | {r['share_of_matmul_ceiling']:.0%} |")
    if memory:
        lines += ["", f"Streaming from a {memory['store_gb']:.2f} GB store with a {memory['memory_budget_gb']} GB budget (in memory: {memory['in_memory']}): "
                  f"peak RSS {memory['peak_rss_mb']:.0f} MB; bound = interpreter + libraries {memory['import_rss_mb']:.0f} MB + budget "
                  f"{memory['memory_budget_gb'] * 1024:.0f} MB + model and optimizer {memory['model_and_optimizer_mb']:.0f} MB + step activations "
                  f"{memory['activations_mb']:.0f} MB = {memory['bound_mb']:.0f} MB; within bound: {memory['within_bound']}."]
    if ours and fastest:
        lines += ["", f"Ours vs fastest peer ({fastest['lib']}): {ours['speed_vs_fastest_peer']:.2f}x samples/s, "
                  f"FVU {ours['fvu']:.4f} vs {fastest['fvu']:.4f}."]
    (OUT / f"train_{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
