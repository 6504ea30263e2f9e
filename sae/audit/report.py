"""The audit end to end: signal -> enriched concepts -> slices (validated) -> look-alike queue -> map; saved to the workspace."""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sae._io import building_dir, html_table, safe_name
from sae._lock import exclusive
from sae.audit.enrichment import concept_enrichment
from sae.audit.queue import lookalike_queue
from sae.audit.signal import FailureSignal
from sae.audit.slices import AuditConfig, Slice, discover, rule_rows, rule_score, split_rows
from sae.audit.validate import validate
from sae.errors import SaeError
from sae.run import Run
from sae.search.example import ExamplePlanner
from sae.search.index import ConceptIndex


@dataclass
class AuditReport:
    """Everything an audit found: concepts, slices (validated or not, with reasons), look-alikes, map."""

    signal: FailureSignal
    config: AuditConfig
    concepts: pd.DataFrame
    """Per-feature failure enrichment over all items (most significant first)."""
    slices: list[Slice]
    queue: pd.DataFrame
    info: dict
    ids: np.ndarray | None = field(repr=False, default=None)
    map: pd.DataFrame | None = None
    path: Path | None = None
    index: ConceptIndex | None = field(repr=False, default=None)
    """The index the audit ran on (slice members are read from it)."""
    run: object | None = field(repr=False, default=None)
    holdout: np.ndarray | None = field(repr=False, default=None)
    """Row numbers of the held-out items (slices are validated on them)."""
    """The SAE run audited (set by :func:`audit_run`; the widget view opens it)."""

    def slice_table(self) -> pd.DataFrame:
        rows = []
        for s in self.slices:
            st = s.stats
            rows.append({"slice": s.id, "name": s.name, "validated": st.validated, "concepts": list(s.concepts), "without": list(s.negated),
                         "cluster_size": st.cluster_size, "discovery_members": st.discovery_members,
                         "discovery_failure_rate": st.discovery_failure_rate, "holdout_members": st.holdout_members,
                         "holdout_failure_rate": st.holdout_failure_rate, "holdout_lift": st.holdout_lift,
                         "holdout_q": st.holdout_q, "why_not": st.why_not,
                         "llm_name": st.llm_name, "llm_summary": st.llm_summary,
                         "prototypes": [str(self.ids[r]) for r in s.prototypes] if self.ids is not None else list(s.prototypes)})
        cols = ["slice", "name", "validated", "concepts", "without", "cluster_size", "discovery_members", "discovery_failure_rate",
                "holdout_members", "holdout_failure_rate", "holdout_lift", "holdout_q", "why_not", "llm_name", "llm_summary", "prototypes"]
        return pd.DataFrame(rows, columns=cols)

    def significant_concepts(self, n: int = 20) -> pd.DataFrame:
        return self.concepts[(self.concepts["q"] < self.config.alpha) & (self.concepts["risk_difference"] > 0)].head(n)

    def members(self, slice_id: int, index: ConceptIndex | None = None) -> pd.DataFrame:
        """Every item matching a slice's rule, strongest first, with its failure flag."""
        index = index or self.index
        s = self.slices[slice_id]
        rows = rule_rows(index, s.concepts, negated=s.negated)
        score = rule_score(index, s.concepts, rows)
        order = np.lexsort((rows, -score))
        if self.ids is None:
            raise SaeError("this report has no item ids to list members by")
        return pd.DataFrame({"row": rows[order], "id": self.ids[rows[order]], "score": score[order], "failed": self.signal.failed[rows[order]]})

    def summary(self) -> str:
        v = sum(s.stats.validated for s in self.slices)
        return (f"{self.signal.source}: {int(self.signal.failed.sum()):,} of {len(self.signal.failed):,} items fail "
                f"({self.signal.rate:.1%}); {int((self.concepts['q'] < self.config.alpha).sum())} concepts enriched (q < {self.config.alpha}); "
                f"{len(self.slices)} slices, {v} validated on held-out items; {self.info.get('unexplained', 0)} failing discovery items unexplained")

    def _repr_html_(self) -> str:
        t = self.slice_table().drop(columns=["concepts", "without"])
        c = self.significant_concepts(10)[["feature", "label", "n_active", "failure_rate_active", "failure_rate_inactive", "ci_low", "ci_high", "q"]]
        return (f"<div><b>Failure audit</b>: {html.escape(self.summary())}<h4>Slices</h4>{html_table(t)}"
                f"<h4>Concepts that explain the failures</h4>{html_table(c)}</div>")

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        from sae.display import bundle

        usable = self.run is not None and self.map is not None
        return bundle(self._repr_html_(), f"AuditReport({self.summary()})", "audit_report" if usable else None, self)

    def save(self, folder: Path) -> Path:
        """Write the report atomically: concepts.parquet, slices.parquet, queue.csv, map.parquet, report.json.

        The folder is locked while it is written (a second writer is refused, naming the first), and
        only an earlier report (or an empty folder) is ever replaced: a folder holding anything else is
        refused, never removed."""
        folder = Path(folder)
        with exclusive(folder, f"audit report {folder.name}"):
            if folder.is_symlink() or (folder.exists() and not _replaceable(folder)):
                raise SaeError(f"refusing to write an audit report over {folder}: it exists and is not an audit report "
                               "(no report.json); choose another name")
            with building_dir(folder) as tmp:  # a unique hidden folder, renamed over the old report when complete
                self._write(tmp)
        self.path = folder
        return folder

    def _write(self, tmp: Path) -> None:
        self.concepts.to_parquet(tmp / "concepts.parquet")
        t = self.slice_table()
        t.assign(concepts=t["concepts"].map(json.dumps), without=t["without"].map(json.dumps),
                 prototypes=t["prototypes"].map(json.dumps)).to_parquet(tmp / "slices.parquet")
        self.queue.to_csv(tmp / "queue.csv", index=False)
        if self.map is not None:
            self.map.to_parquet(tmp / "map.parquet")
        doc = {"signal": {"source": self.signal.source, "items": int(len(self.signal.failed)), "failed": int(self.signal.failed.sum())},
               "config": asdict(self.config), "info": self.info, "summary": self.summary(),
               "model_digest": getattr(self.run, "model_digest", None)}
        (tmp / "report.json").write_text(json.dumps(doc, indent=2, default=float))


def _replaceable(folder: Path) -> bool:
    """True for a folder an audit may replace: an earlier report (it holds report.json) or an empty folder."""
    return folder.is_dir() and ((folder / "report.json").is_file() or not any(folder.iterdir()))


def audit(index: ConceptIndex, codes, signal: FailureSignal, labels: dict[int, str], ids: np.ndarray, *,
          groups: np.ndarray | None = None, pool: np.ndarray | None = None, config: AuditConfig = AuditConfig(),
          with_map: bool = False, map_cache: Path | None = None, map_key: str = "", compute=None) -> AuditReport:
    """Run the whole audit on one SAE's index. ``pool`` (bool per row) is where look-alikes are mined
    (default: the passing items); ``groups`` keeps whole volumes/patients on one side of the split;
    ``compute`` (a :class:`sae.compute.DaskConfig`) counts the enrichment and transforms the map
    on a Dask cluster (same results)."""
    from sae.errors import SaeError

    cfg = config
    failed = signal.check(cfg.min_slice_size).failed
    if len(failed) != index.n_rows:
        raise SaeError(f"the failure signal has {len(failed)} values; the SAE's codes have {index.n_rows} rows")
    disc, hold = split_rows(index.n_rows, groups, cfg.holdout_frac, cfg.seed, cfg.min_groups)
    if compute is not None:
        from sae.audit.dask import concept_enrichment_dask

        concepts = concept_enrichment_dask(codes, failed, labels, compute=compute)
    else:
        concepts = concept_enrichment(index, failed, labels)
    exclude = (signal.column.replace("_", " ").lower(),) if signal.column else ()
    slices, info = discover(index, failed, labels, disc, cfg, exclude_terms=exclude)
    validate(index, failed, slices, disc, hold, cfg)
    slices.sort(key=lambda s: (not s.stats.validated, -s.stats.holdout_failed))
    for i, s in enumerate(slices):
        s.id = i
    pool = ~failed if pool is None else np.asarray(pool, bool)
    queue = lookalike_queue(index, ExamplePlanner(index, codes, labels), slices, pool, cfg.queue_size, ids)
    info |= {"discovery_rows": int(len(disc)), "holdout_rows": int(len(hold)), "pool_rows": int(pool.sum())}
    report = AuditReport(signal, cfg, concepts, slices, queue, info, ids=ids, index=index, holdout=hold)
    if with_map:
        if compute is not None:
            from sae.audit.dask import concept_map_dask

            report.map = concept_map_dask(index, codes, cache_dir=map_cache, key=map_key, compute=compute)
        else:
            from sae.audit.concept_map import concept_map

            report.map = concept_map(index, codes, cache_dir=map_cache, key=map_key)
    return report


def audit_run(run: Run, signal: FailureSignal | None = None, *, failure: str | None = None, threshold: float | None = None,
              above: bool = True, probe: str | None = None, labeler: str | None = None, config: AuditConfig = AuditConfig(),
              pool_column: str | None = None, with_map: bool = False, name: str | None = None, save: bool = True,
              llm=None, index: ConceptIndex | None = None, compute=None) -> AuditReport:
    """Audit an SAE run of a workspace: the signal from a column (``failure``), a probe's errors
    (``probe``) or given; ``llm`` (an LLMClient) adds LLM names and summaries of the slices;
    ``index``: the run's ConceptIndex when the caller already built one; ``compute``: a DaskConfig
    for the enrichment counts and the map. The report is saved under
    ``saes/<run>/audits/<name>/``; ``name`` (default: the failure column) must be one plain folder name."""
    if name is not None:
        safe_name(name, "audit name")
    store, meta, group_key = run.verify().store, run.meta, run.group_key
    groups = meta[group_key].to_numpy() if group_key in meta else None
    if signal is None:
        if failure:
            signal = FailureSignal.from_column(meta, failure, threshold, above)
        elif probe:
            if probe not in meta:
                raise SaeError(f"unknown probe target {probe!r}; the store has {sorted(c for c in meta.columns if c != 'id')}")
            signal = FailureSignal.probe_errors(store.read_embeddings(), meta[probe], groups=groups)
        else:
            raise SaeError("give a failure signal: a column (--failure quality_fail) or a probe target (--probe orientation)")
    pool = None
    if pool_column:
        if pool_column not in meta or not pd.api.types.is_bool_dtype(meta[pool_column]):
            raise SaeError(f"--pool-column must name a boolean column (True = may be queued); got {pool_column!r}")
        pool = meta[pool_column].to_numpy(bool)
    codes = run.codes
    labels = run.labels(labeler)
    index = index or ConceptIndex.of(run)
    default = signal.column or (f"probe-{probe}" if probe else "signal")
    folder = run.path / "audits" / (name or safe_name(default, "audit name (from the signal; give one with name=/--name)"))
    names = labels.mapping(exclude_columns=(signal.column,) if signal.column else ())  # never the failure column
    report = audit(index, codes, signal, names, meta["id"].to_numpy(), groups=groups, pool=pool, config=config,
                   with_map=with_map, map_cache=run.path / "audits", map_key=f"{store.fingerprint}:{run.model_digest}", compute=compute)
    report.run = run
    if llm is not None and report.slices:
        from sae.audit.naming import name_slices

        report.info["llm_naming_errors"] = name_slices(report, llm)
    if save:
        report.save(folder)
    return report
