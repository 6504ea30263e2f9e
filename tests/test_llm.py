"""The one LLM wrapper against a real HTTP server on 127.0.0.1 that speaks the OpenAI API."""

from __future__ import annotations

import json

import pytest

from sae.errors import LLMError, LLMUnreachableError
from sae.interpret.prompts import LABEL_SCHEMA
from sae.llm import LLMClient, LLMConfig, LLMRequest, extract_json, parse_answer

GOOD = json.dumps({"label": "motion artifact", "description": "Ghosted slices.", "confidence": 0.9})


def client(server, tmp_path, **kw) -> LLMClient:
    cfg = LLMConfig(model="test-model", base_url=server.base_url, cache_dir=str(tmp_path / "llm"), backoff_s=0.01,
                    **{"timeout_s": 5.0, "max_retries": 2, "concurrency": 2, **kw})
    return LLMClient(cfg, api_key="sk-test-secret-123", sleep=lambda s: None)


def req(key, text="describe feature 1") -> LLMRequest:
    return LLMRequest(key, [{"role": "user", "content": text}], LABEL_SCHEMA, "test-v1")


def test_good_answer_is_cached_and_a_rerun_makes_no_call(fake_openai, tmp_path):
    fake_openai.script.extend([("content", GOOD)])
    c = client(fake_openai, tmp_path)
    res = c.run_one(req(1))
    assert res.ok and res.data["label"] == "motion artifact" and res.calls == 1 and not res.cached
    assert res.input_tokens == 100 and res.output_tokens == 20
    again = client(fake_openai, tmp_path).run_one(req(1))
    assert again.ok and again.cached and again.data == res.data
    assert len(fake_openai.chat_requests()) == 1
    body = fake_openai.chat_requests()[0]["body"]
    assert body["model"] == "test-model" and body["response_format"] == {"type": "json_object"}
    assert c.usage()["calls"] == 1 and c.usage()["input_tokens"] == 100


def test_malformed_answer_gets_one_repair(fake_openai, tmp_path):
    fake_openai.script.extend([("content", "Sure! Here it is: {label: oops"), ("content", GOOD)])
    res = client(fake_openai, tmp_path).run_one(req(1))
    assert res.ok and res.calls == 2
    repair = fake_openai.chat_requests()[1]["body"]["messages"]
    assert repair[-2]["role"] == "assistant" and "could not be used" in repair[-1]["content"]


def test_malformed_twice_is_a_recorded_failure_and_the_batch_goes_on(fake_openai, tmp_path):
    bad = json.dumps({"label": "x"})  # valid JSON, missing required fields
    fake_openai.script.extend([("content", bad), ("content", bad)])
    c = client(fake_openai, tmp_path, concurrency=1)
    results = c.run([req(1, "a"), req(2, "b")], progress=False)
    assert [r.ok for r in results] == [False, True]
    assert "after repair" in results[0].error and "description" in results[0].error
    ledger = c.ledger.frame()
    assert list(ledger["ok"]) == [False, True]


def test_429_then_success_is_retried(fake_openai, tmp_path):
    fake_openai.script.extend([("status", 429), ("status", 503), ("content", GOOD)])
    res = client(fake_openai, tmp_path).run_one(req(1))
    assert res.ok and res.calls == 3


def test_persistent_500_gives_up_with_a_clear_error(fake_openai, tmp_path):
    fake_openai.script.extend([("status", 500)] * 3)
    res = client(fake_openai, tmp_path, max_retries=2).run_one(req(1))
    assert not res.ok and "gave up after 3 attempts: HTTP 500" in res.error
    assert len(fake_openai.chat_requests()) == 3


def test_a_hang_past_the_timeout_is_retried_then_recorded(fake_openai, tmp_path):
    fake_openai.script.extend([("hang", 30), ("hang", 30)])
    c = client(fake_openai, tmp_path, timeout_s=0.5, max_retries=1, concurrency=1)
    results = c.run([req(1, "a"), req(2, "b")], progress=False)
    assert not results[0].ok and "timed out" in results[0].error
    assert results[1].ok


def test_unreachable_server_and_missing_model_are_clear(tmp_path, monkeypatch):
    cfg = LLMConfig(model="m", base_url="http://127.0.0.1:9/v1", cache_dir=str(tmp_path), max_retries=1, timeout_s=2)
    with pytest.raises(LLMUnreachableError, match="cannot reach the LLM server at http://127.0.0.1:9/v1"):
        LLMClient(cfg, sleep=lambda s: None).run([req(1)], progress=False)
    monkeypatch.delenv("SAE_LLM_MODEL", raising=False)
    with pytest.raises(LLMError, match="no LLM model configured"):
        LLMClient(LLMConfig(cache_dir=str(tmp_path)))


def test_rejected_key_stops_the_batch(fake_openai, tmp_path):
    fake_openai.script.extend([("status", 401)])
    with pytest.raises(LLMError, match="refused the API key"):
        client(fake_openai, tmp_path, concurrency=1).run([req(1), req(2, "b")], progress=False)


def test_dry_run_estimates_without_calling(fake_openai, tmp_path):
    c = client(fake_openai, tmp_path, price_input_per_mtok=1.0, price_output_per_mtok=2.0, max_tokens=100)
    c.run_one(req(1))
    est = c.estimate([req(1), req(2, "x" * 400)])
    assert est["requests"] == 2 and est["cached"] == 1 and est["calls"] == 1
    assert 100 <= est["input_tokens"] <= 120 and est["output_tokens_max"] == 100
    assert est["cost_usd_max"] == pytest.approx((est["input_tokens"] * 1 + 100 * 2) / 1e6, abs=1e-4)
    assert len(fake_openai.chat_requests()) == 1


def test_key_is_sent_but_never_written(fake_openai, tmp_path):
    c = client(fake_openai, tmp_path)
    c.run([req(i, f"t{i}") for i in range(3)], progress=False)
    assert {k.lower(): v for k, v in fake_openai.chat_requests()[0]["headers"].items()}["authorization"] == "Bearer sk-test-secret-123"
    for path in (tmp_path / "llm").rglob("*"):
        if path.is_file():
            assert "sk-test-secret-123" not in path.read_text()


@pytest.mark.parametrize("text", [GOOD, f"```json\n{GOOD}\n```", f"The answer:\n{GOOD}\nThanks."])
def test_json_is_found_in_fences_and_prose(text):
    assert parse_answer(text, LABEL_SCHEMA)["label"] == "motion artifact"


def test_schema_violations_are_named():
    with pytest.raises(ValueError, match="confidence"):
        parse_answer(json.dumps({"label": "a", "description": "b", "confidence": "high"}), LABEL_SCHEMA)
    with pytest.raises(ValueError, match="description"):
        parse_answer(json.dumps({"label": "a", "confidence": 0.5}), LABEL_SCHEMA)
    with pytest.raises(json.JSONDecodeError):
        extract_json("no json here")


@pytest.mark.parametrize("kind,expected", [
    ("json_schema", {"type": "json_schema", "json_schema": {"name": "answer", "schema": LABEL_SCHEMA, "strict": False}}),
    ("json_object+schema", {"type": "json_object", "schema": LABEL_SCHEMA}),
    ("none", None),
])
def test_response_formats(fake_openai, tmp_path, kind, expected):
    fake_openai.script.extend([("content", GOOD)])
    assert client(fake_openai, tmp_path, response_format=kind).run_one(req(1)).ok
    assert fake_openai.chat_requests()[0]["body"].get("response_format") == expected
    with pytest.raises(LLMError, match="unknown response_format"):
        client(fake_openai, tmp_path / "x", response_format="xml").run_one(req(2))
