"""Defences against what an LLM server sends back: malformed bodies, echoed secrets, instruction-like text.

- :func:`read_completion` reads a chat-completions body itself, so a 200 whose body is truncated, not
  JSON, or has no choices raises :class:`MalformedBody` (the client retries it like a transient error
  and, when retries run out, records it as that request's failure) instead of a traceback from the SDK.
- :func:`scrub` removes the API key (and anything that looks like a bearer token or an ``sk-`` key)
  from text before it is stored, logged or raised: some servers echo the Authorization header back
  in their error bodies.
- :func:`instruction_flags` names the instruction-like patterns in a label (see
  :data:`INSTRUCTION_PATTERNS`): such text is flagged in the labels table and never reaches a later
  prompt outside the ``<data>`` fence.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"
_BEARER = re.compile(r"(?i)\bBearer\s+[^\s'\",;}\]]+")
_SK_TOKEN = re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}")

INSTRUCTION_PATTERNS: dict[str, re.Pattern[str]] = {
    "ignore-instructions": re.compile(r"(?i)\bignore\s+(?:all\s+|any\s+)?(?:previous|prior|the\s+above|above|all|earlier)"
                                      r"(?:\s+\w+)?\s+(?:instructions?|prompts?|rules)"),
    "system-prompt": re.compile(r"(?i)\bsystem\s+(?:prompt|message|instructions?)\b"),
    "you-are-now": re.compile(r"(?i)\byou\s+are\s+now\b"),
    "disregard": re.compile(r"(?i)\bdisregard\b"),
    "new-instructions": re.compile(r"(?i)\b(?:new|updated|real)\s+(?:instructions|orders)\b"),
    "role-tag": re.compile(r"(?im)^\s*(?:system|user)\s*:|\b(?:assistant|developer)\s*:|<\|[a-z_]+\|>|\[/?INST\]|<<SYS>>|</?s>"),
    "data-fence": re.compile(r"(?i)</?\s*data\s*>"),
    "url": re.compile(r"(?i)\b(?:https?://|ftp://|www\.)\S+"),
    "code-fence": re.compile(r"```|~~~"),
}
"""Instruction-like text a label or description should never contain, by name: a label that matches is
flagged (the ``flags`` column of a labels table) and is fenced as data, or dropped, when it is shown
to an LLM again. The list is deliberately short and specific, so real concept names do not match."""


class MalformedBody(Exception):
    """A 200 response whose body is not a usable chat completion (truncated, not JSON, no choices)."""


def scrub(text: str, secrets: Iterable[str] = (), tokens: bool = True) -> str:
    """``text`` without any of ``secrets`` (also in JSON-escaped form) and, with ``tokens`` (error
    messages), without anything that looks like a bearer token or an ``sk-`` key."""
    out = str(text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            for form in {secret, json.dumps(secret)[1:-1]}:
                out = out.replace(form, REDACTED)
    if not tokens:  # an answer: only the key itself goes (a label may well say "weight bearer")
        return out
    out = _BEARER.sub(f"Bearer {REDACTED}", out)
    return _SK_TOKEN.sub(f"sk-{REDACTED}", out)


def instruction_flags(text: str) -> tuple[str, ...]:
    """Names of the :data:`INSTRUCTION_PATTERNS` found in ``text`` (empty: it reads as plain data)."""
    return tuple(name for name, pattern in INSTRUCTION_PATTERNS.items() if pattern.search(str(text or "")))


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def read_completion(body: str) -> tuple[str, int, int]:
    """(answer text, prompt tokens, completion tokens) of a chat-completions body; :class:`MalformedBody` otherwise."""
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as e:
        raise MalformedBody(f"the body is not JSON ({e.msg} at position {e.pos} of {len(body)} characters)") from None
    if not isinstance(doc, dict):
        raise MalformedBody(f"the body is a JSON {type(doc).__name__}, not an object")
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        err = doc.get("error")
        detail = f" (error: {str(err.get('message', err) if isinstance(err, dict) else err)[:200]})" if err else ""
        raise MalformedBody(f"the body has no choices{detail}")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise MalformedBody("the first choice has no message")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise MalformedBody(f"the message content is a {type(content).__name__}, not text")
    usage = doc.get("usage")
    usage = usage if isinstance(usage, dict) else {}
    return content or "", _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))
