"""JupyterLab widgets over the Python API: FeatureBrowser, ConceptSearch, FailureExplorer (linked by a Workbench)."""

import ipywidgets

from sae.widgets.concept_search import ConceptSearch
from sae.widgets.failure_explorer import AuditPanel, FailureExplorer
from sae.widgets.fallback import StaticFallback
from sae.widgets.feature_browser import FeatureBrowser
from sae.widgets.workbench import Workbench


class Dashboard(StaticFallback, ipywidgets.Tab):
    """The linked views in tabs, displayed with one static copy of all of them (see :mod:`sae.widgets.fallback`)."""

    def static_html(self) -> str:
        import html

        parts = [(self.get_title(i), getattr(v, "static_html", lambda: "")()) for i, v in enumerate(self.children)]
        return "".join(f"<h4>{html.escape(t)}</h4>{body}" for t, body in parts if body)

    def fallback_target(self):
        """The first tab (drawn at once; the others are drawn when opened)."""
        first = self.children[0]
        return first.fallback_target() if isinstance(first, StaticFallback) else first


def dashboard(workbench: Workbench, report=None, query: str = "") -> Dashboard:
    """The three views linked, in tabs: picking a feature anywhere opens it in the browser,
    '+' on a concept adds it to the search plan."""
    views = [FeatureBrowser(workbench), ConceptSearch(workbench, query=query)]
    titles = ["Features", "Search"]
    if report is not None:
        views.append(FailureExplorer(report, workbench))
        titles.append("Failures")
    tabs = Dashboard(children=views)
    for i, t in enumerate(titles):
        tabs.set_title(i, t)
    workbench.on("feature", lambda _f: setattr(tabs, "selected_index", 0))
    workbench.on("add_concept", lambda _p: setattr(tabs, "selected_index", 1))
    return tabs


__all__ = ["AuditPanel", "ConceptSearch", "Dashboard", "FailureExplorer", "FeatureBrowser", "Workbench", "dashboard"]
