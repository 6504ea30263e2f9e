"""The one LLM wrapper: every LLM call in sae-workbench goes through :class:`LLMClient`.

It speaks the OpenAI chat-completions API through the ``openai`` client, so it works with OpenAI
and any compatible server (vLLM, llama.cpp, Ollama). It adds what a batch job over thousands of
features needs: a concurrency limit, retries with exponential backoff on 429 / 5xx / timeouts
(honouring ``Retry-After``), JSON answers validated against a schema with one repair attempt, a
content-addressed disk cache (model + prompt version + inputs), a token and cost ledger, and a
dry-run estimate. The API key is read from the argument or the environment and never written: it is
scrubbed from every error message, answer and ledger entry (servers echo it). A malformed response
body (truncated, not JSON, no choices) is retried like a transient error (see :mod:`sae.llm_safety`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pandas as pd

from sae._io import atomic_write_text
from sae._progress import tqdm
from sae.errors import LLMError, LLMUnreachableError
from sae.llm_safety import MalformedBody, read_completion, scrub

ENV_MODEL = "SAE_LLM_MODEL"
ENV_BASE_URL = "SAE_LLM_BASE_URL"
CHARS_PER_TOKEN = 4.0  # dry-run estimate; real counts come from the server's usage field
IMAGE_TOKENS = 85  # a low-detail image in OpenAI's accounting
REPAIR_PROMPT = ("Your previous answer could not be used: {error}. Reply again with only one JSON object that "
                 "matches the requested fields, no prose and no code fences.")


@dataclass(frozen=True)
class LLMConfig:
    """Where the LLM is and how to call it. Saved with results; holds no secret."""

    model: str | None = None
    """Model name; default from ``SAE_LLM_MODEL``."""
    base_url: str | None = None
    """OpenAI-compatible endpoint (e.g. http://127.0.0.1:8080/v1); default ``SAE_LLM_BASE_URL`` or ``OPENAI_BASE_URL``, else OpenAI."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the key (local servers need none)."""
    timeout_s: float = 60.0
    max_retries: int = 4
    """Retries after the first attempt, on 429, 5xx, timeouts and dropped connections."""
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    concurrency: int = 4
    temperature: float = 0.0
    max_tokens: int = 400
    response_format: str = "json_object"
    """How to ask for JSON: ``json_object`` (OpenAI JSON mode, vLLM), ``json_schema`` (OpenAI structured
    outputs, vLLM, llama-server, Ollama: the schema constrains decoding), ``json_object+schema``
    (llama-cpp-python's server), or ``none`` (the prompt alone asks for JSON)."""
    price_input_per_mtok: float = 0.0
    """USD per million input tokens, for the ledger and the dry-run (0 = free / unknown)."""
    price_output_per_mtok: float = 0.0
    cache_dir: str | None = None
    """Disk cache and ledger folder; default ``~/.cache/sae-workbench/llm``."""

    def resolved(self) -> LLMConfig:
        """Fill model and base URL from the environment; refuse a config without a model."""
        model = self.model or os.environ.get(ENV_MODEL)
        if not model:
            raise LLMError(f"no LLM model configured: pass --model (or LLMConfig(model=...)) or set {ENV_MODEL}")
        base_url = self.base_url or os.environ.get(ENV_BASE_URL) or os.environ.get("OPENAI_BASE_URL")
        cache = self.cache_dir or str(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sae-workbench" / "llm")
        return LLMConfig(**{**asdict(self), "model": model, "base_url": base_url, "cache_dir": cache})

    def public(self) -> dict[str, Any]:
        """The settings worth recording next to results."""
        return {"model": self.model, "base_url": self.base_url, "temperature": self.temperature, "max_tokens": self.max_tokens}


@dataclass(frozen=True)
class LLMRequest:
    """One structured call: chat messages and the JSON schema the answer must satisfy."""

    key: Any
    """The caller's id for the request (e.g. the feature number); not part of the cache key."""
    messages: list[dict]
    schema: dict
    prompt_version: str


@dataclass
class LLMResult:
    key: Any
    ok: bool
    data: dict | None = None
    error: str = ""
    cached: bool = False
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    raw: str = ""

    @property
    def answer(self) -> dict:
        """The parsed answer of a successful call (``data``); an LLMError for a failed one."""
        if self.data is None:
            raise LLMError(f"request {self.key!r} has no answer: {self.error or 'it failed'}")
        return self.data


def extract_json(text: str) -> Any:
    """Parse the JSON object in an answer, tolerating code fences and prose around it."""
    text = (text or "").strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fence:
        text = fence.group(1).strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        a, b = text.find("{"), text.rfind("}")
        if a >= 0 and b > a:
            return json.loads(text[a : b + 1])
        raise


def parse_answer(text: str, schema: dict) -> dict:
    """The answer as a dict valid under ``schema``; raises ValueError with a short reason otherwise."""
    try:
        data = extract_json(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at position {e.pos})") from None
    try:
        jsonschema.validate(data, schema)
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "the answer"
        raise ValueError(f"{where}: {e.message[:200]}") from None
    return data


def estimate_tokens(messages: Sequence[dict]) -> int:
    """Rough input-token count of chat messages (4 characters per token, 85 per image)."""
    total = 0
    for m in messages:
        content = m.get("content", "")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        for p in parts:
            total += IMAGE_TOKENS if p.get("type") == "image_url" else int(len(p.get("text", "")) / CHARS_PER_TOKEN) + 1
        total += 4
    return total


class Ledger:
    """Append-only JSONL record of every call: tokens, cost, seconds, outcome (never the key)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def record(self, **entry: Any) -> None:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **entry}
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as fh:
                fh.write(json.dumps(entry, default=str) + "\n")

    def frame(self) -> pd.DataFrame:
        if not self.path.exists():
            return pd.DataFrame()
        return pd.read_json(self.path, lines=True)


class ResponseCache:
    """Content-addressed answers: ``<dir>/<hash[:2]>/<hash>.json``, written atomically."""

    def __init__(self, root: Path):
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # a torn file from another process: treat as a miss and overwrite

    def put(self, key: str, value: dict) -> None:
        atomic_write_text(self._path(key), json.dumps(value))


@dataclass
class _Attempt:
    text: str
    input_tokens: int
    output_tokens: int
    calls: int


class LLMClient:
    """Structured, cached, retried, concurrent chat completions. See the module docstring."""

    def __init__(self, config: LLMConfig | None = None, *, api_key: str | None = None, sleep: Callable[[float], None] = time.sleep):
        import openai

        self.config = (config or LLMConfig()).resolved()
        key = api_key or os.environ.get(self.config.api_key_env) or "sk-no-key-needed"
        self._openai = openai
        self._client = openai.OpenAI(api_key=key, base_url=self.config.base_url, timeout=self.config.timeout_s, max_retries=0)
        self._sleep = sleep
        self._secrets = (key,)
        assert self.config.cache_dir is not None, "resolved() sets it"
        root = Path(self.config.cache_dir)
        self.cache = ResponseCache(root / "cache")
        self.ledger = Ledger(root / "ledger.jsonl")
        self.calls_made = 0
        self._count_lock = threading.Lock()

    # -- keys, estimates ------------------------------------------------------------------------
    def cache_key(self, req: LLMRequest) -> str:
        c = self.config
        doc = {"model": c.model, "prompt_version": req.prompt_version, "messages": req.messages, "schema": req.schema,
               "temperature": c.temperature, "max_tokens": c.max_tokens, "response_format": c.response_format}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()

    def cost(self, input_tokens: float, output_tokens: float) -> float:
        c = self.config
        return (input_tokens * c.price_input_per_mtok + output_tokens * c.price_output_per_mtok) / 1e6

    def estimate(self, requests: Sequence[LLMRequest], output_tokens_per_call: int | None = None) -> dict[str, Any]:
        """Dry run: how many calls the batch would make, and their tokens and cost, without calling."""
        todo = [r for r in requests if self.cache.get(self.cache_key(r)) is None]
        tin = sum(estimate_tokens(r.messages) for r in todo)
        tout = len(todo) * (output_tokens_per_call or self.config.max_tokens)
        return {"requests": len(requests), "cached": len(requests) - len(todo), "calls": len(todo), "input_tokens": tin,
                "output_tokens_max": tout, "cost_usd_max": round(self.cost(tin, tout), 4), "model": self.config.model,
                "estimate": f"{CHARS_PER_TOKEN:g} characters per token; output at most max_tokens per call"}

    # -- one call with retries ------------------------------------------------------------------
    def _retry_after(self, err) -> float | None:
        response = getattr(err, "response", None)
        value = response.headers.get("retry-after") if response is not None else None
        try:
            return min(float(value), self.config.max_backoff_s) if value is not None else None
        except ValueError:
            return None

    def _response_format(self, schema: dict) -> dict | None:
        kind = self.config.response_format
        if kind == "json_object":
            return {"type": "json_object"}
        if kind == "json_object+schema":
            return {"type": "json_object", "schema": schema}
        if kind == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": False}}
        if kind == "none":
            return None
        raise LLMError(f"unknown response_format {kind!r}: use json_object, json_schema, json_object+schema or none")

    def scrub(self, text: str, tokens: bool = True) -> str:
        """``text`` without the API key (``tokens``: nor anything like a bearer token; see :func:`sae.llm_safety.scrub`)."""
        return scrub(text, self._secrets, tokens)

    def _complete(self, messages: list[dict], schema: dict) -> _Attempt:
        """One chat completion, retried on transient failures and malformed bodies; raises LLMError when it gives up.

        Every message it raises or returns is scrubbed of the API key."""
        o, c = self._openai, self.config
        kwargs: dict[str, Any] = {"model": c.model, "messages": messages, "temperature": c.temperature, "max_tokens": c.max_tokens}
        fmt = self._response_format(schema)
        if fmt is not None:
            kwargs["response_format"] = fmt
        last = ""
        for attempt in range(c.max_retries + 1):
            with self._count_lock:
                self.calls_made += 1
            try:
                raw = self._client.chat.completions.with_raw_response.create(**kwargs)
                text, tin, tout = read_completion(raw.text)  # our parse: a bad body is this request's problem
                return _Attempt(self.scrub(text, tokens=False), tin, tout, attempt + 1)
            except MalformedBody as e:
                last, wait = f"malformed response body: {self.scrub(str(e))}", None
            except o.APITimeoutError:
                last, wait = f"timed out after {c.timeout_s:g} s", None
            except o.APIConnectionError as e:
                if attempt == c.max_retries:
                    raise LLMUnreachableError(self.scrub(f"cannot reach the LLM server at {c.base_url or 'api.openai.com'}: {e}; "
                                                         "is it running, and is the base URL right (it usually ends in /v1)?")) from None
                last, wait = self.scrub(f"connection failed: {e}"), None
            except o.APIStatusError as e:
                if e.status_code in (401, 403):
                    raise LLMError(f"the LLM server refused the API key ({e.status_code}); set {c.api_key_env}") from None
                if e.status_code == 404:
                    raise LLMError(self.scrub(f"model {c.model!r} or endpoint not found at {c.base_url} (404)")) from None
                if e.status_code != 429 and e.status_code < 500:
                    raise _BadRequest(f"the server rejected the request ({e.status_code}): {self.scrub(str(e))[:300]}") from None
                last, wait = f"HTTP {e.status_code}: {self.scrub(str(e))[:200]}", self._retry_after(e)
            if attempt < c.max_retries:
                backoff = min(c.max_backoff_s, c.backoff_s * 2**attempt) * (0.5 + random.random() / 2)
                self._sleep(wait if wait is not None else backoff)
        raise _GaveUp(self.scrub(f"gave up after {c.max_retries + 1} attempts: {last}"))

    # -- one structured request -----------------------------------------------------------------
    def run_one(self, req: LLMRequest) -> LLMResult:
        """Answer one request from the cache, or call (with one repair attempt for a bad answer)."""
        key = self.cache_key(req)
        hit = self.cache.get(key)
        if hit is not None:
            return LLMResult(req.key, True, data=hit["data"], cached=True, raw=hit.get("raw", ""))
        t0 = time.perf_counter()
        res = LLMResult(req.key, False)
        messages = list(req.messages)
        for round_ in range(2):  # the answer, then one repair
            try:
                att = self._complete(messages, req.schema)
            except (_GaveUp, _BadRequest) as e:
                res.error = str(e)
                break
            res.calls += att.calls
            res.input_tokens += att.input_tokens
            res.output_tokens += att.output_tokens
            res.raw = att.text
            try:
                res.data, res.ok, res.error = parse_answer(att.text, req.schema), True, ""
                break
            except ValueError as e:
                res.error = f"malformed answer{' after repair' if round_ else ''}: {e}"
                messages = messages + [{"role": "assistant", "content": att.text}, {"role": "user", "content": REPAIR_PROMPT.format(error=e)}]
        res.seconds, res.error = time.perf_counter() - t0, self.scrub(res.error)
        if res.ok:
            self.cache.put(key, {"data": res.data, "raw": res.raw, "model": self.config.model, "prompt_version": req.prompt_version})
        self.ledger.record(model=self.config.model, base_url=self.config.base_url, prompt_version=req.prompt_version,
                           request=str(req.key), ok=res.ok, error=res.error, calls=res.calls, input_tokens=res.input_tokens,
                           output_tokens=res.output_tokens, cost_usd=self.cost(res.input_tokens, res.output_tokens),
                           seconds=round(res.seconds, 3), cache_key=key)
        return res

    def run(self, requests: Iterable[LLMRequest], *, on_result: Callable[[LLMResult], None] | None = None,
            progress: bool = True, desc: str = "LLM calls") -> list[LLMResult]:
        """Answer every request, ``concurrency`` at a time; ``on_result`` sees each result as it lands.

        A request that fails for good is returned with ``ok=False`` and the batch goes on; an
        unreachable server or a rejected key stops the batch (results already delivered are kept).
        """
        requests = list(requests)
        out: list[LLMResult | None] = [None] * len(requests)
        with ThreadPoolExecutor(max_workers=max(1, self.config.concurrency)) as pool:
            futures = {pool.submit(self.run_one, r): i for i, r in enumerate(requests)}
            try:
                for fut in tqdm(as_completed(futures), total=len(futures), desc=desc, disable=not progress):
                    res = fut.result()
                    out[futures[fut]] = res
                    if on_result is not None:
                        on_result(res)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
        return [r for r in out if r is not None]

    def usage(self) -> dict[str, Any]:
        """Totals from the ledger: calls, tokens, cost."""
        df = self.ledger.frame()
        if df.empty:
            return {"requests": 0, "calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
        return {"requests": int(len(df)), "calls": int(df["calls"].sum()), "input_tokens": int(df["input_tokens"].sum()),
                "output_tokens": int(df["output_tokens"].sum()), "cost_usd": float(df["cost_usd"].sum())}


class _GaveUp(Exception):
    """Retries exhausted for one request (recorded as that request's failure)."""


class _BadRequest(Exception):
    """A 4xx other than 401/403/404/429: this request is wrong; others may be fine."""
