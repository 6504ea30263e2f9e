"""``sae figures``: the standard figure set of a workspace (feature panels, a query panel and its explanation,
slice panels, the concept map)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sae.run import Run


def write_figures(run: Run, out: Path, *, n_features: int = 4, query: str | None = None, failure: str | None = None,
                  formats: Sequence[str] = ("png", "pdf", "svg"), dpi: int = 200) -> list[Path]:
    """Write the standard set under ``out`` (feature panels, a query panel, the query's explanation, the
    Pareto figure when the workspace holds two or more evaluated runs, slice panels and the concept map
    with ``failure``); returns every file written."""
    import matplotlib.pyplot as plt

    from sae.interpret.evidence import EvidenceBuilder
    from sae.search.searcher import Searcher
    from sae.views import feature_card
    from sae.viz import concept_map_figure, feature_figure, query_figure, save_figure, slice_figure
    from sae.viz_explain import explanation_figure, main_features

    out = Path(out)
    searcher = Searcher(run)
    store, labels = run.store, searcher.labels
    images = store.previews if store.has_image_previews else None
    written: list[Path] = []

    def save(fig, stem: str) -> None:
        written.extend(save_figure(fig, out / stem, formats=formats, dpi=dpi))
        plt.close(fig)

    builder = EvidenceBuilder.of(run, progress=False)
    for _, row in labels.best(n_features).iterrows():
        f = int(row["feature"])
        card = feature_card(builder, labels, f)
        score = f"detection {row['detection']:.2f}" if "detection" in row and row["detection"] == row["detection"] else ""
        thumbs = images(card.top["row"].to_numpy()[:6]) if images else None
        save(feature_figure(card, score, thumbs), f"feature-{f}")
    text = query or labels.best(1)["label"].iloc[0].split(",")[0]
    res = searcher.search(text, top=8)
    save(query_figure(res, images(res.hits["row"].to_numpy()) if images else None), "query")
    cards = [feature_card(builder, labels, f) for f in main_features(res)]
    save(explanation_figure(res, cards, images(res.hits["row"].to_numpy()[:6]) if images else None), "explanation")
    from sae.sweep import runs_table
    from sae.viz import pareto_figure

    table = runs_table([Run(run.ws, p) for p in run.ws.sae_runs()])
    if len(table) >= 2:  # a sweep's runs: FVU against L0
        save(pareto_figure(table), "pareto")
    if failure:
        from sae.audit.report import audit_run

        report = audit_run(run, failure=failure, with_map=True, index=searcher.index)
        for s in [s for s in report.slices if s.stats.validated][:6]:
            save(slice_figure(report, s.id, images(np.asarray(s.prototypes)) if images else None), f"slice-{s.id}")
        save(concept_map_figure(report), "concept-map")
    return written
