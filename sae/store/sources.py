"""Opening import sources so that a bad one is one :class:`~sae.errors.StoreError` naming the file.

A missing file, a 0-byte / truncated / garbage / object-dtype ``.npy``, a truncated Parquet file, an
unreadable HDF5 file or an image that does not decode each end in a message that names the file and
says what is wrong, never in a NumPy / pyarrow / PIL traceback. Image folders that mix greyscale and
colour images are read consistently: all greyscale stays 2-D, any colour turns every image to RGB.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from sae.errors import SaeError, StoreError

GREY_MODES = ("L", "I", "I;16", "F", "1")
"""PIL modes :func:`sae.encoders.images.load_image` reads as 2-D greyscale (every other mode becomes RGB)."""

T = TypeVar("T")


def require_file(path: str | os.PathLike, what: str = "source") -> Path:
    """``path`` as a Path when it is an existing file, else a StoreError saying it is missing or a folder."""
    path = Path(path)
    if not path.exists():
        raise StoreError(f"{what} {path} does not exist")
    if not path.is_file():
        raise StoreError(f"{what} {path} is not a file")
    return path


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """A ``.npy`` file memory-mapped read-only, checked to be a 2-D array of real numbers."""
    path = require_file(path, "embeddings file")
    if path.stat().st_size == 0:
        raise StoreError(f"{path} is empty (0 bytes), not a .npy array")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        text = str(exc)
        if "Python objects" in text or "pickled" in text:
            why = "it holds Python objects (dtype object), not numbers; save a numeric array, e.g. np.save(path, x.astype(np.float32))"
        elif "mmap length" in text:
            why = "it is truncated (shorter than its header says)"
        else:
            why = f"it is not a valid .npy file ({text})"
        raise StoreError(f"cannot import {path}: {why}") from exc
    except (EOFError, OSError, zipfile.BadZipFile) as exc:
        raise StoreError(f"cannot import {path}: it is not a valid .npy file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(arr, np.ndarray):
        raise StoreError(f"cannot import {path}: it is an .npz archive, not one array; save the embeddings with np.save")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise StoreError(f"cannot import {path}: it holds dtype {arr.dtype}, not real numbers")
    return arr


def read_guarded(path: Path, what: str, errors: tuple[type[BaseException], ...], read: Callable[[], T], where: str = "") -> T:
    """``read()``, with any of ``errors`` (a damaged file) raised as a StoreError naming ``path`` (and ``where`` in it)."""
    try:
        return read()
    except SaeError:
        raise
    except errors as exc:
        raise StoreError(f"cannot read {what} {path}{where}: {type(exc).__name__}: {exc}; the file may be truncated or damaged") from exc


def open_parquet(path: str | os.PathLike) -> Any:
    """A ``pyarrow.parquet.ParquetFile``; a missing or damaged file is a StoreError naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    file = require_file(path, "Parquet file")
    return read_guarded(file, "Parquet file", (pa.ArrowException, OSError), lambda: pq.ParquetFile(file))


def parquet_batches(pf: Any, path: str | os.PathLike, batch_size: int) -> Iterator[Any]:
    """Record batches of a Parquet file as DataFrames; a read error midway names the file and the rows reached."""
    import pyarrow as pa

    batches = iter(pf.iter_batches(batch_size=batch_size))
    done = 0
    while True:
        where = f" (after its first {done:,} rows)" if done else ""
        rb = read_guarded(Path(path), "Parquet file", (pa.ArrowException, OSError), lambda: next(batches, None), where)
        if rb is None:
            return
        done += rb.num_rows
        yield read_guarded(Path(path), "Parquet file", (pa.ArrowException, OSError), rb.to_pandas, where)


def open_hdf5(path: str | os.PathLike) -> Any:
    """An ``h5py.File`` open for reading; a missing or damaged file is a StoreError naming it."""
    import h5py

    file = require_file(path, "HDF5 file")
    return read_guarded(file, "HDF5 file", (OSError, ValueError), lambda: h5py.File(file, "r"))


def any_colour(files: Sequence[Path]) -> bool:
    """Whether any image is colour (read from the headers only); an unreadable file is named."""
    from PIL import Image

    colour = False
    for path in files:
        try:
            with Image.open(path) as im:
                colour = colour or im.mode not in GREY_MODES
        except Exception as exc:
            raise StoreError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from exc
    return colour


def load_images(files: Sequence[Path], colour: bool) -> list[np.ndarray]:
    """Decode images (uint8), all RGB when ``colour`` (a folder mixing grey and colour); a bad file is named."""
    from sae.encoders.images import load_image, to_rgb_uint8

    images = []
    for path in files:
        try:
            image = load_image(path)
        except (SaeError, MemoryError):
            raise
        except Exception as exc:  # PIL raises OSError, SyntaxError, struct.error ... for damaged files
            raise StoreError(f"cannot decode image {path}: {type(exc).__name__}: {exc}") from exc
        images.append(to_rgb_uint8(image) if colour and image.ndim == 2 else image)
    return images
