"""Scale past one machine on existing engines: Dask for the stages over Zarr chunks, torch DDP for training.

- :class:`DaskConfig` / :func:`dask_client`: a LocalCluster by default, any scheduler by address;
- :func:`encode_store_dask`: codes, statistics and inverted index, identical to ``sae.codes.encode_store``;
- :func:`concept_enrichment_dask`, :func:`concept_map_dask`: the audit's enrichment and UMAP map;
- :class:`DistributedTrainer` (``sae.distributed.ddp``): DistributedDataParallel training under torchrun.
"""

from sae.distributed.cluster import DaskConfig, dask_client, peak_rss_gb, workers_peak_rss_gb
from sae.distributed.encode import encode_store_dask

__all__ = ["DaskConfig", "dask_client", "encode_store_dask", "peak_rss_gb", "workers_peak_rss_gb",
           "concept_enrichment_dask", "concept_map_dask", "DistributedTrainer"]


def __getattr__(name):  # lazy: the audit and training halves import heavier modules
    if name in ("concept_enrichment_dask", "concept_map_dask"):
        from sae.distributed import audit

        return getattr(audit, name)
    if name == "DistributedTrainer":
        from sae.distributed.ddp import DistributedTrainer

        return DistributedTrainer
    raise AttributeError(name)
