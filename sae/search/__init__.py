"""Language-driven retrieval over the concept space: query plans, ranking from the inverted index."""

from sae.search.index import ConceptIndex, SearchResult
from sae.search.parse import split_query
from sae.search.plan import Concept, QueryPlan
from sae.search.planner import EmbeddingPlanner

__all__ = ["ConceptIndex", "SearchResult", "split_query", "Concept", "QueryPlan", "EmbeddingPlanner"]
