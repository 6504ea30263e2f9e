"""Small shared helpers with no domain knowledge: atomic writes, folder replacement, PNG, HTML tables.

Every artifact the package writes goes through :func:`atomic_write_text` / :func:`atomic_write_bytes`
(a file) or :func:`building_dir` (a folder): written beside its destination under a unique hidden
name, then renamed into place, so an interrupted run never leaves a half-written file that looks
whole, and two writers never share a temporary name.
"""

from __future__ import annotations

import base64
import html
import io
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


def safe_name(name: str, what: str = "name") -> str:
    """``name`` when it is one plain path component (no separator, not ``.``/``..``, not hidden, no NUL);
    user-given names (runs, audits) become folder names, and must never reach outside their folder."""
    from sae.errors import UnsafeNameError

    text = str(name)
    bad = (not text or text in (".", "..") or text.startswith(".") or "/" in text or "\\" in text or "\0" in text
           or os.sep in text or (os.altsep is not None and os.altsep in text) or len(text) > 200)
    if bad:
        raise UnsafeNameError(f"{what} {name!r} must be one plain folder name (letters, digits, - _ ., no / and not starting with .)")
    return text


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write a file via a unique temporary sibling, fsync and a rename (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode())


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a unique temporary sibling of ``path`` for a writer that needs a file name (Parquet, ``np.save``);
    on success it is renamed onto ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def partial_path(final: Path) -> Path:
    """A unique sibling folder to build ``final`` in before it is renamed into place (pid recorded)."""
    return final.with_name(f".{final.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def replace_dir(built: Path, final: Path) -> None:
    """Move a fully built folder onto ``final``; an old folder there is swapped out, then removed."""
    trash = None
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:12]}")
        os.replace(final, trash)
    os.replace(built, final)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_partials(final: Path) -> None:
    """Delete leftovers of interrupted builds next to ``final`` whose writer process is gone."""
    if not final.parent.exists():
        return
    for leftover in final.parent.glob(f".{final.name}.partial-*"):
        pid = leftover.name.rsplit(".partial-", 1)[1].split("-", 1)[0]
        if not pid.isdigit() or not _pid_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


@contextmanager
def building_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh hidden build folder for ``final``; on success it replaces ``final`` (the old one is
    swapped out, then removed), on any error it is removed and ``final`` is left as it was."""
    final = Path(final).absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(final)
    build = partial_path(final)
    build.mkdir()
    try:
        yield build
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    replace_dir(build, final)


def png_bytes(image: np.ndarray) -> bytes:
    """A uint8 thumbnail encoded as PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def png_data_url(image: np.ndarray) -> str:
    """A uint8 thumbnail as a base64 PNG data URL (for HTML tables and vision models)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode()


def html_table(frame: Any, raw: tuple[str, ...] = ()) -> str:
    """An HTML table of a DataFrame with every cell escaped except the ``raw`` columns (HTML we built:
    ``<img>`` data URLs). Text from metadata and LLMs is untrusted: it never reaches the page unescaped."""
    def cell(col: str, v: Any) -> str:
        if col in raw:
            return str(v)
        return html.escape(f"{v:.3f}" if isinstance(v, float) else str(v))

    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(c, v)}</td>" for c, v in zip(frame.columns, row, strict=False)) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f"<table class='dataframe'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
