"""Language-driven retrieval over the concept space: query plans, ranking from the inverted index."""

from sae.search.baseline import SAILBaseline
from sae.search.example import DenseIndex, ExamplePlanner, compose
from sae.search.index import ConceptIndex, SearchResult
from sae.search.llm_planner import LLMPlanner
from sae.search.parse import split_query
from sae.search.plan import Concept, QueryPlan
from sae.search.planner import EmbeddingPlanner
from sae.search.searcher import Searcher, filter_mask
from sae.search.thesaurus import Thesaurus

__all__ = [
           "Concept",
           "ConceptIndex",
           "DenseIndex",
           "EmbeddingPlanner",
           "ExamplePlanner",
           "LLMPlanner",
           "QueryPlan",
           "SAILBaseline",
           "SearchResult",
           "Searcher",
           "Thesaurus",
           "compose",
           "filter_mask",
           "split_query",
]
