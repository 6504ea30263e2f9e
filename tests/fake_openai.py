"""A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions API, with scripted answers.

``FakeOpenAI.script`` is a queue of behaviours consumed one per request; when it is empty,
``responder(body) -> str`` writes the answer. Behaviours: ``("content", text)``, ``("status", code)``
(with a Retry-After of 0 for 429), ``("hang", seconds)``, ``("body", text)`` (a 200 whose whole body is
``text``, e.g. truncated JSON, sent as application/json with a matching Content-Length) and
``("echo-auth", code)`` (the request's Authorization header echoed back: in the error message of a
``code`` response, or for 200 inside a good label answer's description, as a careless server might).
Every request is recorded with its headers.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def label_answer(body: dict) -> str:
    """A good labeling answer that names the feature found in the prompt."""
    user = body["messages"][-1]["content"]
    text = user if isinstance(user, str) else " ".join(p.get("text", "") for p in user if p.get("type") == "text")
    feature = text.split("Feature ", 1)[1].split(":", 1)[0] if "Feature " in text else "?"
    return json.dumps({"label": f"concept {feature}", "description": f"Items of concept {feature}.",
                       "evidence": ["T1", "T2"], "confidence": 0.8})


class FakeOpenAI:
    def __init__(self, responder: Callable[[dict], str] = label_answer):
        self.script: deque = deque()
        self.responder = responder
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep pytest output clean
                pass

            def _send(self, code: int, doc: dict | str, headers: dict | None = None) -> None:
                data = (doc if isinstance(doc, str) else json.dumps(doc)).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with outer.lock:
                    outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    step = outer.script.popleft() if outer.script else None
                if step and step[0] == "hang":
                    outer.stop_event.wait(step[1])
                    return
                if step and step[0] == "body":
                    return self._send(200, step[1])
                if step and step[0] == "echo-auth":
                    auth = self.headers.get("Authorization", "")
                    if step[1] != 200:
                        return self._send(step[1], {"error": {"message": f"bad request; you sent Authorization: {auth}", "type": "test"}})
                    good = json.loads(outer.responder(body))
                    step = ("content", json.dumps({**good, "description": f"{good['description']} (key {auth})"}))
                if step and step[0] == "status":
                    headers = {"Retry-After": "0"} if step[1] == 429 else {}
                    return self._send(step[1], {"error": {"message": f"scripted {step[1]}", "type": "test"}}, headers)
                content = step[1] if step else outer.responder(body)
                self._send(200, {
                    "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()), "model": body.get("model"),
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
                })

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def chat_requests(self) -> list[dict]:
        return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()
