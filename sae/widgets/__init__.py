"""JupyterLab widgets over the Python API: FeatureBrowser, ConceptSearch, FailureExplorer (linked by a Workbench)."""

from sae.widgets.concept_search import ConceptSearch
from sae.widgets.failure_explorer import AuditPanel, FailureExplorer
from sae.widgets.feature_browser import FeatureBrowser
from sae.widgets.workbench import Workbench


def dashboard(workbench: Workbench, report=None, query: str = ""):
    """The three views linked, in tabs: picking a feature anywhere opens it in the browser,
    '+' on a concept adds it to the search plan."""
    import ipywidgets

    views = [FeatureBrowser(workbench), ConceptSearch(workbench, query=query)]
    titles = ["Features", "Search"]
    if report is not None:
        views.append(FailureExplorer(report, workbench))
        titles.append("Failures")
    tabs = ipywidgets.Tab(children=views)
    for i, t in enumerate(titles):
        tabs.set_title(i, t)
    workbench.on("feature", lambda _f: setattr(tabs, "selected_index", 0))
    workbench.on("add_concept", lambda _p: setattr(tabs, "selected_index", 1))
    return tabs


__all__ = ["AuditPanel", "ConceptSearch", "FailureExplorer", "FeatureBrowser", "Workbench", "dashboard"]
