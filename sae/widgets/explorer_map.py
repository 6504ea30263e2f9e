"""Parts of :class:`~sae.widgets.failure_explorer.FailureExplorer` kept apart from its layout: the map's numeric
colourings and margins, its tooltip previews and the selection table.

Tooltip previews. jupyter-scatter asks Python for a hovered point's preview (one custom message per hover, answered
from the scatter's data frame), so a preview column costs memory in the kernel, not traffic: every item's thumbnail
is kept as a PNG data URL (``data:image/png;base64,...``: the map sets it as the tooltip's CSS background image) when
the store has image previews, its text preview (set as text, never HTML) when it has text previews, and nothing (the
id alone) beyond :data:`MAX_PREVIEW_ITEMS` items or without previews.

Selection table. The selected items, failing ones first, then by row (the failures are what the explorer is for; by
row keeps the order stable as the selection grows), paged by :data:`TABLE_PAGE`: per item its id, failing flag, its
status on the map and its strongest feature (by calibrated presence, as in the item viewer)."""

from __future__ import annotations

import numpy as np
import pandas as pd

MAP_MARGIN = 0.03
"""The margin around the points (a share of their range)."""
NUMERIC_MAP, LEGEND_STEPS = "viridis", 5
"""A numeric column or a feature's activation: a continuous colormap; its legend lists 5 values."""
PREVIEW = "preview"
"""The scatter data's column holding each item's tooltip preview."""
MAX_PREVIEW_ITEMS = 50_000
"""Above this many items the map shows no preview (the data URLs would hold ~3 KB per item in the kernel)."""
MAX_PREVIEW_CHARS = 24_000
"""A thumbnail whose data URL is longer than this (~18 KB of PNG) is left out of its tooltip: thumbnails are small
(2-4 KB), a big one would be sent on every hover."""
BLANK_PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
"""A 1x1 black PNG: the preview of an item whose thumbnail is left out. The map keeps the previous point's preview
when a point's is empty, so an item without one must still have a (blank) one."""
NO_TEXT = "(no text)"
"""The text preview of an item whose text is empty (for the same reason)."""
PREVIEW_CHUNK = 1024
"""Thumbnails are read from the store this many at a time."""
TABLE_PAGE = 24
"""Items per page of the selection table (the thumbnails sent to the panel at once)."""


def preview_kind(wb, n_items: int) -> str | None:
    """``"image"``, ``"text"`` or ``None``: what the map's tooltips preview for a store of ``n_items`` items."""
    if n_items > MAX_PREVIEW_ITEMS:
        return None
    if wb.has_images:
        return "image"
    return "text" if wb.store.has_text_previews else None


def preview_values(wb, n_items: int, kind: str | None) -> list[str]:
    """Per item its tooltip preview: a PNG data URL (``kind="image"``; :data:`BLANK_PNG` when too large), a caption
    (``"text"``; :data:`NO_TEXT` when empty); "" for every item when there is no preview."""
    if kind == "text":
        return [c if c.strip() else NO_TEXT for c in wb.captions(np.arange(n_items), width=280)]
    if kind != "image":
        return [""] * n_items
    from sae._io import png_data_url

    out: list[str] = []
    for start in range(0, n_items, PREVIEW_CHUNK):  # bounded memory; the workbench's LRU cache is left alone
        images = wb.store.previews(np.arange(start, min(start + PREVIEW_CHUNK, n_items), dtype=np.int64))
        out += [url if len(url) <= MAX_PREVIEW_CHARS else BLANK_PNG for url in map(png_data_url, images)]
    return out


def tooltip_options(kind: str | None) -> dict:
    """jupyter-scatter's tooltip settings for a preview of ``kind`` (none: the id and status alone)."""
    if kind is None:
        return {}
    if kind == "image":
        return {"tooltip_preview": PREVIEW, "tooltip_preview_type": "image", "tooltip_preview_image_size": "contain",
                "tooltip_preview_image_height": 96, "tooltip_preview_image_background_color": "#000000"}
    return {"tooltip_preview": PREVIEW, "tooltip_preview_type": "text", "tooltip_preview_text_lines": 3}


def table_order(rows: np.ndarray, failed: np.ndarray) -> np.ndarray:
    """The table's order of the selected ``rows``: failing items first, then by row."""
    rows = np.unique(np.asarray(rows, np.int64))
    return rows[np.argsort(~failed[rows], kind="stable")]


def top_features(wb, rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Per row its strongest feature (highest calibrated presence, then activation; -1 when none fires) and label:
    the first concept of :meth:`Workbench.item_features`, read for all rows at once."""
    rows = np.asarray(rows, np.int64)
    csr = wb.searcher.codes.rows(rows)
    scale = wb.index.scale
    labels = wb.labels.mapping()
    feats = np.full(len(rows), -1, np.int64)
    for i in range(len(rows)):
        a, b = csr.indptr[i], csr.indptr[i + 1]
        if b > a:
            f, v = csr.indices[a:b].astype(np.int64), csr.data[a:b].astype(np.float64)
            pres = np.minimum(v / scale[f], 1.0)
            feats[i] = f[np.lexsort((-v, -pres))[0]]
    return feats, [labels.get(int(f), "") if f >= 0 else "" for f in feats]


def table_page(wb, report, status: pd.Series, ordered: np.ndarray, page: int) -> tuple[dict, list[bytes]]:
    """One page of the selection table (``page`` clamped to the pages there are) and its thumbnails."""
    n = len(ordered)
    last = max(0, (n - 1) // TABLE_PAGE)
    page = min(max(0, int(page)), last)
    shown = ordered[page * TABLE_PAGE:(page + 1) * TABLE_PAGE]
    feats, labels = top_features(wb, shown)
    failed, states = report.signal.failed, status.to_numpy()
    rows = [{"row": int(r), "id": str(report.ids[r]), "failed": bool(failed[r]), "status": str(states[r]),
             "feature": int(f), "label": lab, "caption": c}
            for r, f, lab, c in zip(shown, feats, labels, wb.captions(shown))]
    start = page * TABLE_PAGE
    text = f"items {start + 1}-{start + len(shown)} of {n}" if n else ""
    table = {"rows": rows, "page": page, "n_pages": last + 1 if n else 0, "n": n, "text": text, "images": bool(wb.has_images)}
    return table, wb.thumbnails(shown)


def padded(values) -> tuple[float, float]:
    """The range of ``values`` with :data:`MAP_MARGIN` on each side (points on the edge stay whole)."""
    v = np.asarray(values, np.float64)
    lo, hi = float(np.nanmin(v)), float(np.nanmax(v))
    pad = MAP_MARGIN * (hi - lo if hi > lo else 1.0)
    return lo - pad, hi + pad


def numeric_colors(values: np.ndarray, variable: str) -> tuple[dict, int]:
    """The colour encoding of numbers on a continuous colormap over their range (missing values drawn at the minimum)
    and its number of legend entries."""
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1.0
    values = np.where(np.isfinite(values), values, lo)
    return {"by": values, "map": NUMERIC_MAP, "norm": (lo, hi), "labeling": {"variable": variable}}, LEGEND_STEPS


LEGEND_ROW_PX, LEGEND_PAD_PX = 16, 14
"""The height of one legend row (and the legend's title and padding) at jscatter's small legend size."""
TOP_BAND_MAX = 0.35
"""The legend sits in a free band above the points while that band is at most this share of the map's height ..."""
SIDE_LEGEND_PX, NARROWEST_MAP_PX = 110, 600
"""... else in a free band right of them, this wide (its labels cut to ``slice 12``) on a map at least this wide."""


def legend_on_top(entries: int, height: int) -> bool:
    """Whether a legend of ``entries`` values (plus its title) fits in a band above the points."""
    return ((1 + entries) * LEGEND_ROW_PX + LEGEND_PAD_PX) / height <= TOP_BAND_MAX


def legend_scales(x, y, entries: int, height: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """The x and y domains that keep the legend's band (above the points, or right of them when it would be too tall
    there) free of points: the domain grows by the band's share, so the points keep to the rest of the map."""
    (xlo, xhi), (ylo, yhi) = padded(x), padded(y)
    if legend_on_top(entries, height):
        band = ((1 + entries) * LEGEND_ROW_PX + LEGEND_PAD_PX) / height
        return (xlo, xhi), (ylo, ylo + (yhi - ylo) / (1 - band))
    side = SIDE_LEGEND_PX / NARROWEST_MAP_PX
    return (xlo, xlo + (xhi - xlo) / (1 - side)), (ylo, yhi)
