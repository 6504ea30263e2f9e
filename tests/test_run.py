"""The Run object: every artifact opened once and shared, stale stores refused at the start of a stage."""

from __future__ import annotations

import numpy as np
import pytest

from sae.errors import StaleArtifactError


def test_a_run_opens_each_artifact_once_and_stages_share_them(run_ws):
    from sae.interpret import MetadataLabeler, label_run
    from sae.interpret.evidence import EvidenceBuilder
    from sae.search.index import ConceptIndex
    from sae.search.searcher import Searcher

    _, run = run_ws
    assert run.store is run.store and run.codes is run.codes and run.meta is run.meta
    label_run(run, MetadataLabeler(), judge=None, progress=False)
    searcher = Searcher(run)
    evidence = EvidenceBuilder.of(run, progress=False)
    # one inverted index in memory: the concept index and the evidence read the run's postings
    assert searcher.index is ConceptIndex.of(run) and searcher.index.postings is run.postings
    assert evidence.postings is run.postings and evidence.meta is run.meta and EvidenceBuilder.of(run) is evidence
    assert searcher.labels is run.labels()  # labels loaded once per labeler
    f = int(np.flatnonzero(run.stats["count"].to_numpy() > 0)[0])
    rows_disk, vals_disk = run.codes.read_feature(f)
    rows_mem, vals_mem = run.postings.top(f)
    assert np.array_equal(rows_disk, rows_mem) and np.array_equal(vals_disk, vals_mem)
    assert np.array_equal(run.postings.rows(f), np.sort(rows_disk))


def test_relabeling_refreshes_the_runs_labels(run_ws):
    from sae.interpret import MetadataLabeler, label_run

    _, run = run_ws
    first = label_run(run, MetadataLabeler(), judge=None, progress=False)
    cached = run.labels()
    label_run(run, MetadataLabeler(), judge=None, progress=False)
    assert run.labels() is not cached and run.labels().frame["label"].tolist() == first.frame["label"].tolist()


def test_a_store_changed_under_an_open_run_is_refused_at_the_next_stage(run_ws):
    from sae.search.searcher import Searcher
    from sae.store import Store

    ws, run = run_ws
    _ = run.codes  # opened while the store was current
    store = Store.open(ws.store_path, mode="a")
    store.append(np.ones((1, store.dim), np.float32), ["extra"], store.meta(rows=[0]).drop(columns="id"), images=store.previews([0]))
    with pytest.raises(StaleArtifactError):
        Searcher(run)


def test_refresh_forgets_derived_objects(run_ws):
    from sae.search.index import ConceptIndex

    _, run = run_ws
    index = ConceptIndex.of(run)
    postings = run.postings
    run.refresh("codes")
    assert run.postings is not postings and ConceptIndex.of(run) is not index
