"""The standard figure set of the full demo (``sae figures``), checked as a journal would: every PDF's fonts
are TrueType (Type 42), no Type 3; every SVG keeps its text as ``<text>`` elements; no two drawn texts
overlap and none is clipped (the check of ``tests/test_figures.py``, run on each figure before it is saved);
thumbnails are at least 0.8 in wide.

    python benchmarks/figure_set.py [WORKSPACE]     # default artifacts/demo (built by `sae demo`)

Writes the figures to ``artifacts/figures/demo/`` and the checks to ``artifacts/benchmarks/figure_set.{json,md}``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
QUERY = "sagittal slices with ghosting artifact but no bias field"  # the demo's first query: AND, OR-groups and a NOT
sys.path.insert(0, str(ROOT))


def main(workspace: Path) -> dict:
    import sae.viz
    from sae.figures import write_figures
    from sae.run import Run, Workspace
    from tests.test_figures import assert_clean_layout, pdf_font_subtypes, thumbnail_widths

    out = ROOT / "artifacts" / "figures" / "demo"
    out.mkdir(parents=True, exist_ok=True)
    checks: dict[str, dict] = {}
    save = sae.viz.save_figure

    def checked_save(fig, stem, **kw):
        widths = thumbnail_widths(fig)
        texts = assert_clean_layout(fig)  # raises on an overlap or a clipped text
        checks[Path(stem).name] = {"texts_checked": len(texts), "min_thumbnail_in": round(min(widths), 2) if widths else None}
        return save(fig, stem, **kw)

    t0 = time.time()
    with mock.patch.object(sae.viz, "save_figure", checked_save):
        paths = write_figures(Run.find(Workspace(workspace)), out, failure="quality_fail", query=QUERY, formats=("png", "pdf", "svg"), dpi=200)
    for p in paths:
        entry = checks[p.stem]
        if p.suffix == ".pdf":
            entry["pdf_fonts"] = sorted(pdf_font_subtypes(p))
        elif p.suffix == ".svg":
            entry["svg_text_elements"] = p.read_text().count("<text")
        entry.setdefault("files", []).append(p.name)
        entry.setdefault("bytes", 0)
        entry["bytes"] += p.stat().st_size
    result = {"workspace": str(workspace), "seconds": round(time.time() - t0, 1), "figures": checks,
              "all_truetype": all("Type3" not in c["pdf_fonts"] and ({"Type0", "CIDFontType2"} <= set(c["pdf_fonts"])
                                                                          or "TrueType" in c["pdf_fonts"]) for c in checks.values()),
              "all_svg_text": all(c["svg_text_elements"] > 0 for c in checks.values()),
              "min_thumbnail_in": min((c["min_thumbnail_in"] for c in checks.values() if c["min_thumbnail_in"]), default=None)}
    bench = ROOT / "artifacts" / "benchmarks"
    (bench / "figure_set.json").write_text(json.dumps(result, indent=2))
    rows = ["| figure | files | texts checked (no overlap, none clipped) | PDF fonts | SVG `<text>` | smallest thumbnail |",
            "|---|---|---|---|---|---|"]
    rows += [f"| {k} | {', '.join(c['files'])} | {c['texts_checked']} | {' + '.join(c['pdf_fonts'])} | {c['svg_text_elements']} | "
             f"{c['min_thumbnail_in'] if c['min_thumbnail_in'] else '–'} in |" for k, c in checks.items()]
    (bench / "figure_set.md").write_text(
        f"# Figure set of the full demo (`sae figures`, PNG + PDF + SVG at 200 dpi)\n\n"
        f"Written to `artifacts/figures/demo/` in {result['seconds']} s (query and explanation: {QUERY!r}). Every figure passed the layout check of "
        f"`tests/test_figures.py` (no two drawn texts overlap beyond 1.5 px, none outside the saved area).\n\n" + "\n".join(rows) + "\n")
    return result


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "artifacts" / "demo"), indent=2))
