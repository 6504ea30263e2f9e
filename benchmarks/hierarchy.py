"""Hierarchy-aware ground-truth recovery: MMCS for parents and children, splits and absorption, at defaults.

The planted store has parents whose children share 60% of their direction (child = 0.6 parent + 0.8
own), siblings that never share a row and about 7.6 true concepts per row
(:func:`sae.datasets.planted.hierarchical_config`). Each architecture is trained at the package's
defaults (``SAEConfig(d_in, n_latents=<default>, k=<default>, arch)`` and ``TrainConfig()``) and
scored with :func:`sae.truth.recovery_report`, a random decoder of the same shape beside every number.
Goal: MMCS >= 0.85 on parents and on children at defaults on 1e5 rows.

    python benchmarks/hierarchy.py                          # 1e5 rows, d=384, topk batchtopk matryoshka jumprelu
    python benchmarks/hierarchy.py --rows 5000 --archs topk --n 512 --steps 50 --out /tmp/h   # smoke test
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sae.datasets.planted import hierarchical_config, make_planted  # noqa: E402
from sae.evaluate import reconstruction  # noqa: E402
from sae.models import SAEConfig, registered_archs  # noqa: E402
from sae.train import TrainConfig, Trainer  # noqa: E402
from sae.truth import recovery_report, sae_codes  # noqa: E402

OUT = ROOT / "artifacts" / "benchmarks"
GOAL = 0.85
ABSORPTION_ROWS = 20_000


def default_latents(n_rows: int, d_in: int) -> tuple[int, str]:
    """The package's default dictionary size for this data, and where it came from."""
    try:
        from sae.train.plan import default_n_latents
    except ImportError:
        return int(SAEConfig.__dataclass_fields__["n_latents"].default), "sae.train.plan.default_n_latents not importable: SAEConfig's default"
    return int(default_n_latents(n_rows, d_in)), "sae.train.plan.default_n_latents"


def train_config(args: argparse.Namespace) -> TrainConfig:
    """``TrainConfig()`` unless the command line overrides the steps, batch size or device."""
    kw: dict[str, Any] = {}
    if args.batch:
        kw["batch_size"] = args.batch
    if args.device:
        kw["device"] = args.device
    if args.steps:
        batch = args.batch or TrainConfig(**kw).batch_size
        if not isinstance(batch, int):  # a default batch size chosen later, from the data
            raise SystemExit("--steps needs --batch here: TrainConfig() has no fixed batch size")
        kw["max_samples"] = args.steps * batch
    return TrainConfig(**kw)


def holdout_batches(store, rows: slice, batch: int = 8192):
    """The held-out rows in batches (raw embeddings)."""
    for start in range(rows.start, rows.stop, batch):
        yield store.read_embeddings(slice(start, min(start + batch, rows.stop)))


def run_arch(arch: str, store, truth, n_latents: int, k: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train one architecture at defaults (with any overrides) and score it."""
    sae_cfg = SAEConfig(d_in=store.dim, n_latents=n_latents, k=k, arch=arch)
    tr = Trainer(sae_cfg, train_config(args), progress=False)
    t0 = time.perf_counter()
    model = tr.fit(store)
    train_s = time.perf_counter() - t0
    device = tr.cfg.device
    holdout = getattr(tr, "split", None)
    rows = holdout.holdout if holdout is not None else slice(int(store.n_rows * 0.9), store.n_rows)
    rec = reconstruction(model, holdout_batches(store, rows), device=device)
    sample = np.sort(np.random.default_rng(0).choice(store.n_rows, min(ABSORPTION_ROWS, store.n_rows), replace=False))
    codes = sae_codes(model, store.read_embeddings(sample), device=device)
    decoder = model.W_dec.detach().float().cpu().numpy()
    report = recovery_report(truth.directions, truth.parents, decoder, codes, truth.codes[sample])
    return {"arch": arch, "n_latents": n_latents, "k": k, "train_s": train_s, "steps": int(tr.state_.step),
            "holdout_fvu": rec["fvu"], "holdout_l0": rec["l0"], "holdout_rows": rec["rows"],
            "train_config": tr.cfg.to_dict(), "sae_config": sae_cfg.to_dict(), **report}


def _f(v: Any, fmt: str = ".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, fmt)


def _json_safe(v: Any) -> Any:
    """NaN (a group or metric with nothing to measure) as null, so the file is strict JSON."""
    if isinstance(v, dict):
        return {key: _json_safe(x) for key, x in v.items()}
    if isinstance(v, list | tuple):
        return [_json_safe(x) for x in v]
    return None if isinstance(v, float) and np.isnan(v) else v


def markdown(doc: dict[str, Any]) -> str:
    """The results as a markdown table, each score with the random decoder's in parentheses."""
    d = doc["dataset"]
    lines = [f"# Hierarchy recovery: {d['rows']:,} rows, d={d['dim']}, {d['concepts']:,} concepts "
             f"({d['parents']} parents, {d['children']} children, child cos {d['child_cos']}), mean true L0 {d['true_mean_l0']:.2f}", "",
             f"n_latents = {doc['n_latents']} ({'overridden' if 'n' in doc['overrides'] else doc['n_latents_source']}); "
             f"k = {doc['k']} ({'overridden' if 'k' in doc['overrides'] else 'SAEConfig default'}). "
             f"Overrides: {doc['overrides'] or 'none'}. Goal: MMCS >= {GOAL} on parents and children. Random decoder in parentheses.", "",
             "| arch | n | k | MMCS parents | MMCS children | MMCS child residuals | MMCS others | > 0.9 parents | > 0.9 children | split dirs | "
             "absorption (decoder) | absorption (activation, n) | F1 parents | F1 children | holdout FVU | L0 | steps | train s | goal |",
             "|" + "---|" * 19]
    for r in doc["results"]:
        q = r["random"]
        goal = "yes" if min(r["mmcs_parents"], r["mmcs_children"]) >= GOAL else "no"
        lines.append(
            f"| {r['arch']} | {r['n_latents']} | {r['k']} | {_f(r['mmcs_parents'])} ({_f(q['mmcs_parents'])}) | "
            f"{_f(r['mmcs_children'])} ({_f(q['mmcs_children'])}) | {_f(r.get('mmcs_children_residual'))} ({_f(q.get('mmcs_children_residual'))}) | "
            f"{_f(r['mmcs_others'])} ({_f(q['mmcs_others'])}) | "
            f"{_f(r['above_0.9_parents'], '.0%')} | {_f(r['above_0.9_children'], '.0%')} | {r['split_n_directions']} ({q['split_n_directions']}) | "
            f"{_f(r['absorption_decoder'])} ({_f(q['absorption_decoder'])}) | {_f(r['absorption_activation'])}, {r['absorption_activation_n']} | "
            f"{_f(r.get('f1_parents'))} ({_f(q.get('f1_parents'))}) | {_f(r.get('f1_children'))} ({_f(q.get('f1_children'))}) | "
            f"{_f(r['holdout_fvu'], '.4f')} | {_f(r['holdout_l0'], '.1f')} | {r['steps']} | {r['train_s']:.0f} | {goal} |")
    lines += [""] + [f"- {note}" for note in doc["notes"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--child-cos", type=float, default=0.6, help="cosine of each child with its parent (0: the flat control)")
    ap.add_argument("--archs", nargs="+", default=["topk", "batchtopk", "matryoshka", "jumprelu"])
    ap.add_argument("--k", type=int, default=None, help="override the default k (e.g. near the true L0)")
    ap.add_argument("--auto-k", action="store_true", help="pick k as `sae train --auto-k` does (sae.train.autok.choose_k)")
    ap.add_argument("--n", type=int, default=None, help="override the default dictionary size")
    ap.add_argument("--steps", type=int, default=None, help="override the training length (steps of the batch size)")
    ap.add_argument("--batch", type=int, default=None, help="override the default batch size")
    ap.add_argument("--device", default=None, help="training device (default: TrainConfig's)")
    ap.add_argument("--seed", type=int, default=0, help="dataset seed")
    ap.add_argument("--out", type=Path, default=OUT, help="folder for hierarchy.json and hierarchy.md")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    n_default, n_source = default_latents(args.rows, args.dim)
    n_latents = args.n or n_default
    k = args.k or int(SAEConfig.__dataclass_fields__["k"].default)
    overrides = {name: v for name in ("k", "n", "steps", "batch", "device") if (v := getattr(args, name)) is not None}
    notes = [] if n_source.startswith("sae.train.plan") else [f"n_latents: {n_source} ({n_default})"]
    results = []
    with tempfile.TemporaryDirectory(dir=args.out.parent) as tmp:
        t0 = time.perf_counter()
        cfg = hierarchical_config(n_rows=args.rows, dim=args.dim, seed=args.seed, child_cos=args.child_cos)
        store, truth = make_planted(Path(tmp) / "store.zarr", cfg, progress=False)
        gen_s = time.perf_counter() - t0
        dataset = {"rows": args.rows, "dim": args.dim, "concepts": cfg.n_concepts, "parents": cfg.n_parents,
                   "children": int((truth.parents >= 0).sum()), "child_cos": cfg.child_cos,
                   "true_mean_l0": float((truth.codes > 0).sum(1).mean()), "generate_s": gen_s}
        print(json.dumps(dataset), flush=True)
        if args.auto_k:
            from sae.train.autok import choose_k

            choice = choose_k(store, n_latents, rows=slice(0, store.n_rows - int(round(store.n_rows * 0.1))), progress=False)
            k = choice.k
            overrides["k"] = f"auto ({k})"
            notes.append(choice.note())
            print(notes[-1], flush=True)
        for arch in args.archs:
            if arch not in registered_archs():
                notes.append(f"{arch}: not a registered architecture here ({', '.join(registered_archs())}); skipped")
                print(notes[-1], flush=True)
                continue
            res = run_arch(arch, store, truth, n_latents, k, args)
            results.append(res)
            print(json.dumps({key: v for key, v in res.items() if key not in ("train_config", "sae_config")}, default=float), flush=True)
    doc = {"dataset": dataset, "n_latents": n_latents, "n_latents_source": n_source, "k": k, "overrides": overrides, "goal_mmcs": GOAL,
           "absorption_rows": min(ABSORPTION_ROWS, args.rows), "notes": notes, "results": results}
    (args.out / "hierarchy.json").write_text(json.dumps(_json_safe(doc), indent=2, default=float))
    (args.out / "hierarchy.md").write_text(markdown(doc))
    print(markdown(doc))


if __name__ == "__main__":
    main()
