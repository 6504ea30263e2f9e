"""``sae label``: label every feature of an SAE run (metadata or LLM labeler), score the labels, print them."""

from __future__ import annotations

from sae.errors import SaeError


def parse_features(text: str | None) -> list[int] | None:
    """``"0-19,40,41"`` -> [0, ..., 19, 40, 41]; None -> every feature."""
    if not text:
        return None
    out: list[int] = []
    try:
        for part in text.split(","):
            a, _, b = part.strip().partition("-")
            out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    except ValueError:
        raise SaeError(f"--features takes numbers and ranges like 0-19,40 (got {text!r})") from None
    return out


def add_label_parser(sub) -> None:
    p = sub.add_parser("label", help="label the features of an SAE run (offline from metadata, or with an LLM) and score the labels")
    p.add_argument("workspace")
    p.add_argument("--run", help="SAE run name (default: the latest)")
    p.add_argument("--labeler", choices=["auto", "metadata", "text", "llm"], default="auto",
                   help="auto (default): offline, from metadata and the store's text when it has some; metadata: metadata only; "
                        "text: metadata and text phrases; llm: an LLM (--local, or --base-url/--model)")
    p.add_argument("--exclude-column", action="append", default=[], metavar="COLUMN",
                   help="a metadata column that must never name a feature (an outcome, a target, the failure flag); repeatable")
    p.add_argument("--text", metavar="COLUMN", help="a free-text metadata column to take phrases from (default: the text previews)")
    p.add_argument("--no-baselines", action="store_true", help="skip the shuffled-label and random-SAE baselines")
    p.add_argument("--features", help="which features, e.g. 0-19,40 (default: all)")
    p.add_argument("--dry-run", action="store_true", help="LLM only: estimate calls, tokens and cost; call nothing")
    p.add_argument("--judge", choices=["embedding", "terms", "llm", "none"], default="embedding",
                   help="who scores the labels: embedding (MiniLM reads label and item as sentences), terms (exact: does the "
                        "item carry each named term?), llm, none")
    g = p.add_argument_group("LLM (OpenAI or any compatible server)")
    g.add_argument("--local", action="store_true",
                   help="start a local LLM server (xllamacpp, SmolLM2-135M-Instruct or --model-path) for this run and stop it after")
    g.add_argument("--model-path", help="with --local: a GGUF model file (default: the bundled SmolLM2-135M-Instruct)")
    g.add_argument("--model", help="model name (default $SAE_LLM_MODEL)")
    g.add_argument("--base-url", help="e.g. http://127.0.0.1:8080/v1 (default $SAE_LLM_BASE_URL, $OPENAI_BASE_URL, else OpenAI)")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key")
    g.add_argument("--prompt", choices=["contrastive", "compact"], default="contrastive",
                   help="contrastive: the full evidence (instruction-tuned models); compact: short few-shot prompt (small/base models)")
    g.add_argument("--vision", action="store_true", help="send the top items' thumbnails as images")
    g.add_argument("--concurrency", type=int, default=4)
    g.add_argument("--timeout", type=float, default=60.0)
    g.add_argument("--max-retries", type=int, default=4)
    g.add_argument("--max-tokens", type=int, default=400)
    g.add_argument("--response-format", default="json_object", choices=["json_object", "json_schema", "json_object+schema", "none"],
                   help="how to ask for JSON: json_schema constrains decoding on OpenAI, vLLM, llama-server, Ollama; "
                        "json_object+schema on llama-cpp-python; none for servers that reject response_format")
    g.add_argument("--price-in", type=float, default=0.0, help="USD per million input tokens (ledger, dry run)")
    g.add_argument("--price-out", type=float, default=0.0, help="USD per million output tokens")
    g.add_argument("--cache-dir", help="LLM answer cache and ledger (default ~/.cache/sae-workbench/llm)")
    g.add_argument("--domain", default="medical images", help="what the embeddings are of (goes into the prompt)")
    p.set_defaults(func=cmd_label)


def _llm_labeler(args, store):
    from sae.interpret import LLMClient, LLMConfig, LLMLabeler

    cfg = LLMConfig(model=args.model, base_url=args.base_url, api_key_env=args.api_key_env, timeout_s=args.timeout,
                    max_retries=args.max_retries, concurrency=args.concurrency, max_tokens=args.max_tokens,
                    response_format=args.response_format, price_input_per_mtok=args.price_in,
                    price_output_per_mtok=args.price_out, cache_dir=args.cache_dir)
    images = None
    if args.vision:
        if not store.has_image_previews:
            raise SaeError("--vision needs image previews in the store; this one has none")
        images = store.previews
    return LLMLabeler(LLMClient(cfg), domain=args.domain, images=images, prompt=args.prompt)


def _fmt(x) -> str:
    return f"{x:.3f}" if isinstance(x, float) else "n/a"


def print_labels(labels, n: int = 5) -> None:
    """The summary line, the scores beside their baselines, then the best and worst labeled features."""
    s = labels.summary
    print(f"labels {labels.labeler}: {s.get('ok', 0)} labeled, {s.get('unexplained', 0)} unexplained, "
          f"{s.get('dead', 0)} dead, {s.get('failed', 0)} failed")
    if s.get("why_no_labels"):
        print(f"  no feature got a label: {s['why_no_labels']}")
    if "detection" in s:
        base = s.get("baselines", {})
        sh, rnd = base.get("shuffled_labels", {}), base.get("random_sae", {})
        print(f"  detection vs random items {_fmt(s['detection'])} (median {_fmt(s.get('detection_median'))}), "
              f"vs sibling features' items {_fmt(s.get('detection_sibling'))}; chance 0.5; "
              f"shuffled labels {_fmt(sh.get('detection'))} / {_fmt(sh.get('detection_sibling'))}; "
              f"random SAE {_fmt(rnd.get('detection'))} / {_fmt(rnd.get('detection_sibling'))}"
              + (f" ({rnd['labeled_share']:.0%} of its features labeled)" if isinstance(rnd.get("labeled_share"), float) else ""))
        print(f"  intruder {_fmt(s['intruder'])} (chance 0.2), SAIL's top-2-of-5 {_fmt(s['sail_top2'])} (chance 0.4), "
              f"duplicate labels {s['duplicate_rate']:.1%}, near-duplicates (collisions) {s.get('collision_rate', float('nan')):.1%}, "
              f"contradictions {s['contradictions']}, smallest term coverage {_fmt(s.get('min_term_coverage'))}")
    if s.get("unsupported"):
        print(f"  {s['unsupported']} labels use words no evidence supports (see the unsupported column)")
    if s.get("previous"):
        print(f"  {s['previous']}")
    if s.get("flagged"):
        print(f"  {s['flagged']} labels read like instructions (see the flags column); prompts show them only as fenced data")
    cols = [c for c in ["feature", "label", "confidence", "detection", "intruder"] if c in labels.frame]
    for title, df in (("best", labels.best(n)), ("worst", labels.worst(n))):
        print(f"  {title}:")
        for r in df[cols].itertuples(index=False):
            scores = " ".join(f"{c}={getattr(r, c):.2f}" for c in cols[2:])
            print(f"    #{r.feature:<5} {r.label[:70]:<70} {scores}")
    if labels.path:
        print(f"  written to {labels.path}")


def _offline(args):
    from sae.interpret import MetadataLabeler

    return MetadataLabeler(use_text={"auto": None, "metadata": False, "text": True}[args.labeler])


def cmd_label(args) -> int:
    import json

    from sae.interpret import EvidenceConfig, label_run
    from sae.interpret.evidence import EvidenceBuilder
    from sae.interpret.labels import sibling_labels
    from sae.run import Run, Workspace

    ws = Workspace(args.workspace)
    run = Run.find(ws, args.run)
    evidence = EvidenceConfig(exclude_columns=tuple(args.exclude_column), text=args.text or "auto")
    features = parse_features(args.features)
    if args.local and args.labeler != "llm":
        raise SaeError("--local starts a local LLM: use it with --labeler llm")
    if args.dry_run:
        if args.labeler != "llm":
            print("dry run: the offline labeler is free; nothing to estimate")
            return 0
        llm = _llm_labeler(args, run.store)
        builder = EvidenceBuilder.of(run, evidence)
        packs = builder.packs(features)
        llm.prepare(builder)
        llm.sibling_labels = sibling_labels(builder, {p.feature: p for p in packs})  # the prompts label_run sends
        print(json.dumps(llm.client.estimate(llm.requests(packs)), indent=2))
        return 0
    judge = None if args.judge == "none" else args.judge

    def go(labeler) -> None:
        labels = label_run(run, labeler, features=features, evidence=evidence, judge=judge, with_baselines=not args.no_baselines)
        print_labels(labels)

    if args.labeler != "llm":
        go(_offline(args))
    elif args.local:
        from sae.interpret import LLMClient, LLMLabeler
        from sae.llm_local import LocalLLM

        with LocalLLM(args.model_path) as local:  # the server lives as long as the labeling
            print(f"local LLM {local.model} at {local.base_url}")
            go(LLMLabeler(LLMClient(local.config(cache_dir=args.cache_dir, max_tokens=args.max_tokens)), domain=args.domain,
                          prompt="compact" if args.prompt == "contrastive" and args.model_path is None else args.prompt))
    else:
        go(_llm_labeler(args, run.store))
    return 0
