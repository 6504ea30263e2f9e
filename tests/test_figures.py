"""Publication figures on the small labeled demo: editable text in PDF / SVG, no text overlapping another or
leaving the figure, thumbnails at least 0.8 inch wide, the explorer's colours, the explanation figure."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import zlib
from itertools import combinations
from pathlib import Path
from unittest import mock

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from tests.conftest import labeled_copy

QUERY = "axial slices with a spike artifact"
TOLERANCE_PX = 1.5
PAD_INCHES = 0.05  # save_figure's pad around the tight bounding box


# -- helpers ---------------------------------------------------------------------------------------------
def drawn_texts(fig) -> list[tuple[Text, Bbox]]:
    """Every Text artist the figure really draws (visible, non-empty: titles, tick labels, legend entries,
    annotations, suptitles), with its window extent in pixels, from one Agg draw."""
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)  # draw as the PNG export does, whatever the session's backend
    seen: list[tuple[Text, Bbox]] = []
    original = Text.draw

    def record(self, renderer):
        original(self, renderer)
        if self.get_visible() and self.get_text().strip():
            seen.append((self, Text.get_window_extent(self, renderer)))  # the text alone (an annotation's arrow left out)

    with mock.patch.object(Text, "draw", record):
        fig.canvas.draw()
    return seen


def _inside(box: Bbox, frame: Bbox, tol: float) -> bool:
    return box.x0 >= frame.x0 - tol and box.y0 >= frame.y0 - tol and box.x1 <= frame.x1 + tol and box.y1 <= frame.y1 + tol


def _overlap(a: Bbox, b: Bbox) -> float:
    """The smaller side of the intersection of two boxes (<= 0: they do not overlap)."""
    return min(min(a.x1, b.x1) - max(a.x0, b.x0), min(a.y1, b.y1) - max(a.y0, b.y0))


def assert_clean_layout(fig, tol: float = TOLERANCE_PX) -> list[str]:
    """No two drawn texts overlap (beyond ``tol`` px), every one lies inside the figure and inside the region
    ``save_figure`` writes (the tight bounding box plus its pad); returns the texts drawn."""
    texts = drawn_texts(fig)
    assert texts, "the figure draws no text"
    saved = fig.get_tightbbox(fig.canvas.get_renderer()).padded(PAD_INCHES).transformed(fig.dpi_scale_trans)
    clipped = [t.get_text() for t, box in texts if not (_inside(box, fig.bbox, tol) and _inside(box, saved, tol))]
    assert not clipped, f"texts outside the figure: {clipped}"
    clashes = [(a.get_text(), b.get_text()) for (a, ba), (b, bb) in combinations(texts, 2) if _overlap(ba, bb) > tol]
    assert not clashes, f"overlapping texts: {clashes}"
    return [t.get_text() for t, _ in texts]


def thumbnail_widths(fig) -> list[float]:
    """Width in inches of every image axes (after layout and the image's aspect)."""
    fig.canvas.draw()
    return [ax.get_position().width * fig.get_figwidth() for ax in fig.axes if ax.images]


def pdf_font_subtypes(path: Path) -> set[str]:
    """The /Subtype of every font dictionary of a PDF (its streams decompressed when they hold objects)."""
    raw = path.read_bytes()
    chunks = [raw]
    for m in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", raw, re.S):
        with contextlib.suppress(zlib.error):  # a stream that is not deflated (an image, a font program) holds no objects
            chunks.append(zlib.decompress(m.group(1)))
    found: set[str] = set()
    for chunk in chunks:
        for body in re.findall(rb"obj(.*?)endobj", chunk, re.S):
            if re.search(rb"/Type\s*/Font\b", body):
                found |= {s.decode() for s in re.findall(rb"/Subtype\s*/(\w+)", body)}
    return found


# -- fixtures (one labeled workspace for the module) ---------------------------------------------------
@pytest.fixture(scope="module")
def demo(labeled_ws_template, tmp_path_factory):
    """(run, searcher) on a private labeled copy of the trained demo workspace."""
    from sae.search.searcher import Searcher

    _, run = labeled_copy(labeled_ws_template, tmp_path_factory.mktemp("figures"))
    return run, Searcher(run)


@pytest.fixture(scope="module")
def result(demo):
    return demo[1].search(QUERY, top=8)


@pytest.fixture(scope="module")
def report(demo):
    from sae.audit.report import audit_run

    run, searcher = demo
    return audit_run(run, failure="quality_fail", with_map=True, save=False, index=searcher.index)


@pytest.fixture(scope="module")
def all_validated(report):
    """The same audit with every slice marked validated: five slices on the map at once (labels, legend, colours)."""
    slices = [dataclasses.replace(s, stats=dataclasses.replace(s.stats, validated=True, why_not="")) for s in report.slices]
    assert len(slices) >= 3
    return dataclasses.replace(report, slices=slices)


@pytest.fixture(scope="module")
def cards(demo, result):
    from sae.interpret.evidence import EvidenceBuilder
    from sae.views import feature_card
    from sae.viz_explain import main_features

    run, searcher = demo
    builder = EvidenceBuilder.of(run, progress=False)
    return [feature_card(builder, searcher.labels, f) for f in main_features(result)]


def _previews(demo, rows) -> list:
    return demo[1].store.previews(np.asarray(rows))


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# -- the helper itself can fail ------------------------------------------------------------------------
def test_layout_check_catches_overlapping_and_clipped_text():
    fig, ax = plt.subplots(figsize=(3, 2), layout="constrained")  # nothing clipped, but the labels collide
    ax.bar(["all items", "slice (discovery)", "slice (held-out)"], [0.2, 0.6, 0.7])  # the old slice-figure labels
    with pytest.raises(AssertionError, match="overlapping texts"):
        assert_clean_layout(fig)
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.legend(handles=ax.plot([0, 1], label="a legend far too long for this figure, put beside it"), loc="upper left",
              bbox_to_anchor=(1.0, 1.0))
    with pytest.raises(AssertionError, match="outside the figure"):
        assert_clean_layout(fig)


# -- 1. editable text ----------------------------------------------------------------------------------
def test_pdf_embeds_truetype_and_svg_keeps_text_elements(result, tmp_path):
    from sae.viz import query_figure, save_figure

    with plt.rc_context({"pdf.fonttype": 3, "svg.fonttype": "path"}):  # matplotlib's defaults: save_figure must override them
        paths = save_figure(query_figure(result), tmp_path / "query", formats=("pdf", "svg"), dpi=72)
    subtypes = pdf_font_subtypes(paths[0])
    assert "Type3" not in subtypes and subtypes & {"TrueType", "CIDFontType2"}, subtypes
    assert b"/FontFile2" in paths[0].read_bytes()  # the TrueType program itself is embedded
    svg = paths[1].read_text()
    assert svg.count("<text") > 10 and QUERY in svg
    assert 'id="DejaVuSans-' not in svg  # no glyphs drawn as paths


# -- 2. and 3. layout and thumbnails -------------------------------------------------------------------
def test_query_figure_shows_each_hits_contributions_and_fits(demo, result):
    from sae.viz import query_figure

    fig = query_figure(result, _previews(demo, result.hits["row"]))
    texts = assert_clean_layout(fig)
    widths = thumbnail_widths(fig)
    assert len(widths) == 8 and min(widths) >= 0.8, widths
    bars = next(ax for ax in fig.axes if ax.containers)
    hits = result.hits
    stacked = np.zeros(len(hits))
    for c, container in zip(result.contributions, bars.containers):
        widths_drawn = np.array([p.get_width() for p in container.patches])
        np.testing.assert_allclose(widths_drawn, hits[c.column].to_numpy(float), atol=1e-6)  # each bar is its group's column
        stacked += widths_drawn
    np.testing.assert_allclose(stacked, hits["score"].to_numpy(float), atol=1e-5)
    assert len(result.contributions) == 2 and np.ptp(hits["concept.1"]) > 0  # two groups, and they differ between hits
    assert {f"{s:.3f}" for s in hits["score"]} <= set(texts)
    legend = " ".join(t.replace("\n", " ") for t in texts)
    assert all(c.display() in legend for c in result.contributions)  # the group names in full, wrapped not cut


def test_query_figure_without_images_and_with_a_negated_group(demo):
    from sae.viz import query_figure

    res = demo[1].search("axial orientation without spike artifact", top=8)
    assert any(c.negated for c in res.contributions)
    texts = assert_clean_layout(query_figure(res))
    assert any(t.startswith("#1 ") for t in texts) and any("NOT #" in t for t in texts)


def test_slice_figure_wraps_its_labels_and_fits(demo, report, all_validated):
    from sae.viz import slice_figure

    for rep in (report, all_validated):
        for s in rep.slices:
            fig = slice_figure(rep, s.id, _previews(demo, s.prototypes))
            texts = assert_clean_layout(fig)
            assert any("held-out" in t for t in texts)
            widths = thumbnail_widths(fig)
            assert len(widths) == len(s.prototypes) and min(widths) >= 0.8, widths
            plt.close(fig)
    first = report.slices[0]
    why = "held-out lift 1.43 < 1.5; held-out q 0.59 >= 0.05; concepts [19, 46] not enriched on the held-out items"
    s = next((s for s in report.slices if not s.stats.validated and len(s.stats.why_not) > 60), None) or \
        dataclasses.replace(first, stats=dataclasses.replace(first.stats, validated=False, why_not=why))
    rep = dataclasses.replace(report, slices=[s if x.id == s.id else x for x in report.slices])
    texts = assert_clean_layout(slice_figure(rep, s.id))
    assert s.stats.why_not in " ".join(t.replace("\n", " ") for t in texts)  # every reason, not cut at 60 characters


def test_concept_map_labels_every_slice_once_without_collisions(report, all_validated):
    from sae.views import slice_points, slice_title
    from sae.viz import concept_map_figure

    for rep in (report, all_validated):
        fig = concept_map_figure(rep)
        texts = assert_clean_layout(fig)
        shown = set(slice_points(rep))  # a validated slice whose failing members all went to stronger ones is not on the map
        ids = [str(s.id) for s in rep.slices if s.stats.validated and slice_title(s) in shown]
        assert len(ids) >= (1 if rep is report else 3)
        assert sorted(t for t in texts if t.isdigit()) == sorted(ids)
        legend = [t.replace("\n", " ") for t in texts]
        assert all(f"slice {s.id}: {s.name}" in legend for s in rep.slices if str(s.id) in ids)  # named in full, not cut at 40
        labels = [c for c in fig.axes[0].texts if c.get_text().isdigit()]
        frame = fig.axes[0].get_window_extent()
        assert all(_inside(Text.get_window_extent(t), frame, TOLERANCE_PX) for t in labels)  # on the map, not over the legend
        plt.close(fig)


def test_feature_figures_fit_with_readable_thumbnails(demo, cards):
    from sae.viz import feature_figure

    for card in cards:
        fig = feature_figure(card, "detection 0.90", _previews(demo, card.top["row"].to_numpy()[:6]))
        texts = assert_clean_layout(fig)
        assert any(card.enriched["text"].iloc[0] in t.replace("\n", " ") for t in texts)
        widths = thumbnail_widths(fig)
        assert len(widths) == min(6, len(card.top)) and min(widths) >= 0.8, widths
        plt.close(fig)
    assert_clean_layout(feature_figure(cards[0]))


def test_pareto_figure_fits():
    from sae.viz import pareto_figure

    df = pd.DataFrame({"arch": ["topk"] * 3 + ["jumprelu"] * 3, "n_latents": [4096] * 3 + [16384] * 3,
                       "l0": [8, 16, 32, 10, 20, 40], "fvu": [0.4, 0.3, 0.2, 0.35, 0.25, 0.18],
                       "pareto": [False, False, True, True, True, True]})
    texts = assert_clean_layout(pareto_figure(df))
    assert "Pareto front" in texts and "jumprelu, n=16,384" in texts


# -- 4. shared colours ---------------------------------------------------------------------------------
def test_explorer_and_concept_map_colour_each_slice_alike(all_validated):
    from sae.views import FAILING_COLOR, PASSING_COLOR, SLICE_PALETTE, slice_colors, status_colors
    from sae.viz import concept_map_figure
    from sae.widgets import FailureExplorer

    legend = FailureExplorer(all_validated).scatter.widget.legend_encoding["color"]["values"]
    widget = {name.split(":")[0]: to_hex(rgba) for name, rgba, _ in legend}  # "passing", "failing", "slice 3"
    fig = concept_map_figure(all_validated)
    drawn = {c.get_label().split(":")[0]: to_hex(c.get_facecolor()[0]) for c in fig.axes[0].collections}
    assert len(widget) >= 4 and widget == drawn
    assert widget["passing"] == PASSING_COLOR and widget["failing"] == FAILING_COLOR
    assert set(widget.values()) - {PASSING_COLOR, FAILING_COLOR} <= set(SLICE_PALETTE)
    assert len(set(widget.values())) == len(widget)  # every slice its own colour
    shuffled = dataclasses.replace(all_validated, slices=all_validated.slices[::-1])
    assert status_colors(shuffled) == status_colors(all_validated)  # by slice id, whatever the report's order
    assert list(slice_colors(["slice 10: b", "slice 2: a"])) == ["slice 2: a", "slice 10: b"]  # by slice id, not by text


# -- 5. the explanation figure ---------------------------------------------------------------------------
def test_explanation_figure_shows_query_plan_hits_and_evidence(demo, result, cards, tmp_path):
    from sae.viz import save_figure
    from sae.viz_explain import explanation_figure, main_features

    assert main_features(result) == [c.feature for c in result.contributions] and len(cards) == 2  # each group's head
    fig = explanation_figure(result, cards, _previews(demo, result.hits["row"].to_numpy()[:6]))
    texts = assert_clean_layout(fig)
    flat = [t.replace("\n", " ") for t in texts]
    assert any(QUERY in t for t in flat) and "AND" in texts and sum(" OR " in t for t in flat) == 1
    assert all(any(f"#{c.feature} " in t for t in flat) for c in cards)
    assert all(any(c.enriched["text"].iloc[0] in t for t in flat) for c in cards)  # each feature's top term, with its shares
    a, b = cards[0].enriched[["active_frac", "base_frac"]].iloc[0]
    assert f"{a:.0%} vs {b:.0%}" in texts
    widths = thumbnail_widths(fig)
    assert len(widths) == 6 and min(widths) >= 0.8, widths
    paths = save_figure(fig, tmp_path / "explanation", dpi=60)
    heads = {p.suffix: p.read_bytes()[:64] for p in paths}
    assert heads[".png"].startswith(b"\x89PNG") and heads[".pdf"].startswith(b"%PDF") and b"<svg" in paths[2].read_bytes()[:2000]
    assert "Type3" not in pdf_font_subtypes(paths[1])


def test_explanation_figure_of_a_negated_plan_without_images(demo):
    from sae.interpret.evidence import EvidenceBuilder
    from sae.views import feature_card
    from sae.viz_explain import explanation_figure, main_features

    run, searcher = demo
    res = searcher.search("axial orientation without spike artifact", top=6)
    negated = [c.feature for c in res.plan.concepts if c.negated]
    feats = main_features(res)
    assert negated and feats[-1] in negated  # required groups first, the excluded one last
    builder = EvidenceBuilder.of(run, progress=False)
    texts = assert_clean_layout(explanation_figure(res, [feature_card(builder, searcher.labels, f) for f in feats]))
    assert "AND NOT" in texts and any(t.startswith(f"NOT #{negated[0]} ") for t in texts)
    assert_clean_layout(explanation_figure(res))  # no evidence panel


def test_write_figures_adds_the_explanation(demo, tmp_path):
    from sae.figures import write_figures

    written = write_figures(demo[0], tmp_path, n_features=1, query=QUERY, formats=("png", "svg"), dpi=50)
    names = {p.name for p in written}
    assert {"explanation.png", "explanation.svg", "query.png"} <= names and all(p.stat().st_size > 1000 for p in written)
