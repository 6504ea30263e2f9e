"""The live views of domain results, registered by name in :mod:`sae.display` (the domain never imports widgets)."""

from __future__ import annotations

from typing import Any


def search_result_view(result: Any):
    """A ConceptSearch showing the result as it is (its hits in its order, its plan, its query text in the box; the
    plan is not planned again from the text), sharing its searcher's workbench; editing the plan runs it again."""
    from sae.widgets.concept_search import ConceptSearch
    from sae.widgets.workbench import Workbench

    return ConceptSearch(Workbench.of(result.searcher), result=result)


def label_set_view(labels: Any):
    """A FeatureBrowser over the labels' run."""
    from sae.widgets.feature_browser import FeatureBrowser
    from sae.widgets.workbench import Workbench

    return FeatureBrowser(Workbench(labels.run, labels.labeler))


def audit_report_view(report: Any):
    """A FailureExplorer over the report."""
    from sae.widgets.failure_explorer import FailureExplorer

    return FailureExplorer(report)
