"""Build (once, cached) the 1e6-item planted workspace that ``benchmarks/search.py`` queries.

    python benchmarks/search_prepare.py            # 1e6 rows, d=512, SAE n=8192 k=32

The SAE is trained on a sample (``--train-samples``): the benchmark measures query latency over the
codes of every row, which depends on the posting-list lengths (n, k, row count), not on how long the
SAE trained.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sae.datasets.planted import PlantedConfig, make_planted  # noqa: E402
from sae.models import SAEConfig  # noqa: E402
from sae.pipeline import train_run  # noqa: E402
from sae.run import Workspace  # noqa: E402
from sae.train import TrainConfig  # noqa: E402

DEFAULT_WS = ROOT / "artifacts" / "bench-search-1e6"


def prepare(ws_path: Path, rows: int, dim: int, n: int, k: int, train_samples: int) -> dict:
    ws = Workspace(ws_path)
    done = ws_path / "prepared.json"
    if done.exists():
        return json.loads(done.read_text())
    ws_path.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if not ws.exists():
        make_planted(ws.store_path, PlantedConfig(n_rows=rows, dim=dim, n_concepts=4096, dtype="float16"), progress=True)
    t1 = time.perf_counter()
    run = train_run(ws, SAEConfig(d_in=dim, n_latents=n, k=k, arch="topk"),
                    TrainConfig(batch_size=4096, epochs=1, max_samples=train_samples, holdout_frac=0.01),
                    encode=True, evaluate=False, progress=True)
    info = {"rows": rows, "dim": dim, "n": n, "k": k, "train_samples": train_samples, "run": run.name,
            "generate_s": t1 - t0, "train_encode_s": time.perf_counter() - t1,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    done.write_text(json.dumps(info, indent=2))
    return info


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", type=Path, default=DEFAULT_WS)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--train-samples", type=int, default=300_000)
    a = ap.parse_args()
    print(json.dumps(prepare(a.workspace, a.rows, a.dim, a.n, a.k, a.train_samples), indent=2))


if __name__ == "__main__":
    main()
