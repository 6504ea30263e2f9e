"""The audit end to end: signal -> enriched concepts -> slices (validated) -> look-alike queue -> map; saved to the workspace."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from sae._io import building_dir, html_table, safe_name
from sae._lock import exclusive
from sae.audit.candidates import candidate_slices, find_candidates
from sae.audit.discovery import discover
from sae.audit.enrichment import concept_enrichment
from sae.audit.firm import FirmIndex
from sae.audit.queue import lookalike_queue
from sae.audit.signal import FailureSignal
from sae.audit.slices import AuditConfig, Slice, effective_min_size, rule_score, slice_rows, split_rows, without_text
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
            rows.append({"slice": s.id, "name": s.name, "kind": s.kind, "validated": st.validated, "concepts": list(s.concepts),
                         "or": {int(f): list(a) for f, a in s.alternatives.items()}, "without": list(s.negated),
                         "where": " & ".join(c.text() for c in s.conditions),
                         "cluster_size": st.cluster_size, "discovery_members": st.discovery_members,
                         "discovery_failure_rate": st.discovery_failure_rate, "holdout_members": st.holdout_members,
                         "holdout_failure_rate": st.holdout_failure_rate, "holdout_lift": st.holdout_lift,
                         "holdout_q": st.holdout_q, "why_not": st.why_not, "refines": list(st.refines),
                         "name_evidence": "; ".join(f"{e['term']} {e['coverage']:.0%} (lift {e['lift']:.1f})" for e in s.name_evidence),
                         "llm_name": st.llm_name, "llm_summary": st.llm_summary,
                         "prototypes": [str(self.ids[r]) for r in s.prototypes] if self.ids is not None else list(s.prototypes)})
        cols = ["slice", "name", "kind", "validated", "concepts", "or", "without", "where", "cluster_size", "discovery_members", "discovery_failure_rate",
                "holdout_members", "holdout_failure_rate", "holdout_lift", "holdout_q", "why_not", "refines", "name_evidence", "llm_name", "llm_summary",
                "prototypes"]
        return pd.DataFrame(rows, columns=cols)

    def significant_concepts(self, n: int = 20) -> pd.DataFrame:
        return self.concepts[(self.concepts["q"] < self.config.alpha) & (self.concepts["risk_difference"] > 0)].head(n)

    def members(self, slice_id: int, index: ConceptIndex | None = None) -> pd.DataFrame:
        """Every item matching a slice's rule, strongest first, with its failure flag."""
        index = FirmIndex.view(index, self.config.min_ratio) if index is not None else self.index
        s = self.slices[slice_id]
        rows = slice_rows(index, s)
        score = rule_score(index, s.concepts, rows, s.alternatives)
        order = np.lexsort((rows, -score))
        if self.ids is None:
            raise SaeError("this report has no item ids to list members by")
        return pd.DataFrame({"row": rows[order], "id": self.ids[rows[order]], "score": score[order], "failed": self.signal.failed[rows[order]]})

    def member_table(self) -> pd.DataFrame:
        """Every slice's members over all items: slice, row, id, failing, validated (the slice's verdict), side
        (discovery or holdout), so a slice can be checked outside Python (``members.parquet``)."""
        if self.index is None or self.ids is None:
            raise SaeError("this report has no index and ids to list members by")
        held = np.zeros(len(self.signal.failed), bool)
        if self.holdout is not None:
            held[self.holdout] = True
        parts = []
        for s in self.slices:
            rows = slice_rows(self.index, s)
            parts.append(pd.DataFrame({"slice": s.id, "row": rows, "id": self.ids[rows], "failing": self.signal.failed[rows],
                                       "validated": bool(s.stats.validated),
                                       "side": np.where(held[rows], "holdout", "discovery")}))
        cols = ["slice", "row", "id", "failing", "validated", "side"]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)

    def summary(self) -> str:
        v = sum(s.stats.validated for s in self.slices)
        n_enriched, n_slices = int((self.concepts["q"] < self.config.alpha).sum()), len(self.slices)
        return (f"{self.signal.source}: {int(self.signal.failed.sum()):,} of {len(self.signal.failed):,} items fail "
                f"({self.signal.rate:.1%}); {n_enriched} concept{'' if n_enriched == 1 else 's'} enriched (q < {self.config.alpha}); "
                f"{n_slices} slice{'' if n_slices == 1 else 's'}, {v} validated on held-out items; "
                f"{self.info.get('unexplained', 0)} failing discovery items unexplained"
                + "".join(f"; {x}" for x in (self.info.get("min_slice_size_note"), self.info.get("why_no_slices")) if x))

    def _repr_html_(self) -> str:
        t = self.slice_table().drop(columns=["concepts", "or", "without", "refines"])
        c = self.significant_concepts(10)[["feature", "label", "n_active", "failure_rate_active", "failure_rate_inactive", "ci_low", "ci_high", "q"]]
        return (f"<div><b>Failure audit</b>: {html.escape(self.summary())}<h4>Slices</h4>{html_table(t)}"
                f"<h4>Concepts that explain the failures</h4>{html_table(c)}</div>")

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        from sae.display import bundle

        usable = self.run is not None and self.map is not None
        return bundle(self._repr_html_(), f"AuditReport({self.summary()})", "audit_report" if usable else None, self)

    def save(self, folder: Path) -> Path:
        """Write the report atomically: concepts.parquet, slices.parquet, members.parquet, queue.csv, map.parquet, report.json.

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
        t.assign(concepts=t["concepts"].map(json.dumps), **{"or": t["or"].map(json.dumps)}, without=t["without"].map(json.dumps),
                 refines=t["refines"].map(json.dumps), prototypes=t["prototypes"].map(json.dumps)).to_parquet(tmp / "slices.parquet")
        if self.index is not None and self.ids is not None:
            self.member_table().to_parquet(tmp / "members.parquet")
        self.queue.to_csv(tmp / "queue.csv", index=False)
        if self.map is not None:
            self.map.to_parquet(tmp / "map.parquet")
        doc = {"signal": {"source": self.signal.source, "items": int(len(self.signal.failed)), "failed": int(self.signal.failed.sum())},
               "config": asdict(self.config), "info": self.info, "summary": self.summary(),
               "model_digest": getattr(self.run, "model_digest", None)}
        (tmp / "report.json").write_text(json.dumps(doc, indent=2, default=float))


def derived_columns(meta: pd.DataFrame, failed: np.ndarray, exclude: tuple[str | None, ...] = (), max_values: int = 50) -> list[str]:
    """Metadata columns that restate the failure signal: one of their values holds >= 90% of the failures and fails
    >= 99% of the time (the demo's ``severity = severe`` for ``quality_fail``). They never name a slice."""
    out = []
    n_fail = max(int(failed.sum()), 1)
    for col in meta.columns:
        if col == "id" or col in exclude or meta[col].nunique(dropna=False) > max_values:
            continue
        values = meta[col].astype(object).to_numpy()
        for v in pd.unique(values):
            hit = values == v
            k = int(failed[hit].sum())
            if k >= 0.9 * n_fail and k >= 0.99 * hit.sum():
                out.append(str(col))
                break
    return out


def rename_from_evidence(report: AuditReport, run: Run, exclude_columns: tuple[str, ...] = ()) -> None:
    """Rename every slice by the proposed terms its failing members carry (see :mod:`sae.audit.evidence_names`)."""
    from sae.audit.evidence_names import evidence_name
    from sae.interpret.evidence import EvidenceBuilder

    builder = EvidenceBuilder.of(run, progress=False)
    if not builder.has_terms or report.index is None:
        return
    failed = report.signal.failed
    for s in report.slices:
        rows = slice_rows(report.index, s)
        rows = rows[failed[rows]]
        without = without_text(s.labels, s.negated_labels)
        name, evidence = evidence_name(builder.terms, rows, s.proposed, s.concepts, exclude_columns)
        where = " & ".join(c.text() for c in s.conditions)
        if where:  # a metadata condition names itself; label terms (or the concepts' numbers) add to it
            name = where + (f" + {name}" if evidence else (f" & concepts {', '.join(f'#{c}' for c in s.concepts)}" if s.concepts else ""))
        s.name, s.name_evidence = name + (without if evidence else ""), evidence


def positive_terms(run: Run) -> set[str]:
    """Texts of the run's evidence terms that state a presence ("site E", "pleural effusion"; not "no location")."""
    from sae.interpret.evidence import EvidenceBuilder

    builder = EvidenceBuilder.of(run, progress=False)
    if not builder.has_terms:
        return set()
    t = builder.terms
    return set(t.terms["text"].astype(str)[t.positive])


def term_features(labels, exclude_columns: Sequence[str | None] = (), allowed: set[str] | None = None) -> dict[str, list[int]]:
    """Label term -> the features whose (typed) labels carry it: the concept-term units of the pair search. Terms
    from ``exclude_columns`` (the failure column and its restatements) and, with ``allowed``, terms outside it
    (absences such as "no location" are not a concept) are left out."""
    out: dict[str, list[int]] = {}
    drop = {c for c in exclude_columns if c}
    for f, terms in labels.term_columns().items():
        for term, column in terms.items():
            if column not in drop and (allowed is None or term in allowed):
                out.setdefault(term, []).append(int(f))
    return out


def why_no_slices(slices: list[Slice], info: dict, cfg: AuditConfig) -> str:
    """Why the audit validated no slice, and what to change ("" when it validated one)."""
    if any(s.stats.validated for s in slices):
        return ""
    n_fail = int(round(info.get("discovery_failure_rate", 0) * info.get("discovery_rows", 0)))
    if not info.get("enriched_concepts"):
        return (f"no SAE concept is enriched for failure among the {n_fail} failing discovery items (q < {cfg.alpha}, lift >= "
                f"{cfg.min_lift}, >= {max(3, cfg.min_slice_size // 4)} failing members): the failures may not follow a concept "
                "this SAE encodes; try a larger SAE or a smaller k, or group the failures by metadata")
    if not slices:
        return (f"{info['enriched_concepts']} concepts are enriched, but no cluster of failing items reaches the minimum slice "
                f"size {cfg.min_slice_size}; lower it (AuditConfig(min_slice_size=...), --min-slice-size) or audit more items")
    return f"{len(slices)} slice(s) found on the discovery items, none validated on the held-out items: " + "; ".join(
        f"slice {s.id}: {s.stats.why_not}" for s in slices[:3])


def _replaceable(folder: Path) -> bool:
    """True for a folder an audit may replace: an earlier report (it holds report.json) or an empty folder."""
    return folder.is_dir() and ((folder / "report.json").is_file() or not any(folder.iterdir()))


def audit(index: ConceptIndex, codes, signal: FailureSignal, labels: dict[int, str], ids: np.ndarray, *,
          groups: np.ndarray | None = None, pool: np.ndarray | None = None, config: AuditConfig = AuditConfig(),
          with_map: bool = False, map_cache: Path | None = None, map_key: str = "", compute=None,
          meta: pd.DataFrame | None = None, exclude_columns: frozenset[str] = frozenset(),
          term_features: dict[str, list[int]] | None = None) -> AuditReport:
    """Run the whole audit on one SAE's index. ``pool`` (bool per row) is where look-alikes are mined
    (default: the passing items); ``groups`` keeps whole volumes/patients on one side of the split;
    ``meta``: the items' metadata, whose values (outside ``exclude_columns``) are tested as causes beside the
    concepts (:mod:`sae.audit.candidates`; concept pairs are tested either way); ``term_features``: label term ->
    the features whose labels carry it (a concept the SAE spreads over several features is paired as one unit);
    ``compute`` (a :class:`sae.compute.DaskConfig`) counts the enrichment and transforms the map
    on a Dask cluster (same results)."""
    from sae.errors import SaeError

    cfg = config
    failed = signal.check(min(cfg.min_slice_size, cfg.min_slice_floor)).failed
    if len(failed) != index.n_rows:
        raise SaeError(f"the failure signal has {len(failed)} values; the SAE's codes have {index.n_rows} rows")
    index = FirmIndex.view(index, cfg.min_ratio)
    disc, hold = split_rows(index.n_rows, groups, cfg.holdout_frac, cfg.seed, cfg.min_groups)
    size, lowered = effective_min_size(cfg, int(failed[disc].sum()))
    cfg = replace(cfg, min_slice_size=size)
    if compute is not None:
        from sae.audit.dask import concept_enrichment_dask

        concepts = concept_enrichment_dask(codes, failed, labels, compute=compute, index=index)
    else:
        concepts = concept_enrichment(index, failed, labels)
    exclude = (signal.column.replace("_", " ").lower(),) if signal.column else ()
    slices, info = discover(index, failed, labels, disc, cfg, exclude_terms=exclude)
    cands = find_candidates(index, failed, meta, disc, cfg, set(exclude_columns), term_features)
    info["candidates"] = {kind: sum(c.kind == kind for c in cands) for kind in ("metadata", "pair", "concept x metadata")}
    slices += candidate_slices(cands, slices, labels, failed, disc, index, meta, cfg)
    validate(index, failed, slices, disc, hold, cfg)
    slices.sort(key=lambda s: (not s.stats.validated, -s.stats.holdout.rate_low, -s.stats.holdout_failed))
    renumber = {s.id: i for i, s in enumerate(slices)}
    for i, s in enumerate(slices):
        s.id = i
    for s in slices:
        s.stats.refines = sorted(renumber[t] for t in s.stats.refines)
    pool = ~failed if pool is None else np.asarray(pool, bool)
    queue = lookalike_queue(index, ExamplePlanner(index, codes, labels), slices, pool, cfg.queue_size, ids)
    info |= {"discovery_rows": int(len(disc)), "holdout_rows": int(len(hold)), "pool_rows": int(pool.sum()),
             "min_slice_size": size, "min_slice_size_note": lowered}
    info["why_no_slices"] = why_no_slices(slices, info, cfg)
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
              llm=None, index: ConceptIndex | None = None, compute=None, exclude_columns: Sequence[str] = ()) -> AuditReport:
    """Audit an SAE run of a workspace: the signal from a column (``failure``), a probe's errors
    (``probe``) or given; ``llm`` (an LLMClient) adds LLM names and summaries of the slices;
    ``index``: the run's ConceptIndex when the caller already built one; ``compute``: a DaskConfig
    for the enrichment counts and the map; ``exclude_columns``: metadata columns never tested as causes
    (they may still name a slice), besides the failure column, its restatements, the group key and ``label_exclude``. The report is saved under
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
    unknown = [c for c in exclude_columns if c not in meta]
    if unknown:
        raise SaeError(f"unknown column(s) {unknown} to exclude from the audit's causes; the store has "
                       f"{sorted(str(c) for c in meta.columns if c != 'id')}")
    derived = derived_columns(meta, signal.failed, exclude=(signal.column, group_key))
    excluded = frozenset(c for c in (signal.column, group_key, *derived, *store.provenance.get("label_exclude", []),
                                     *exclude_columns) if c)
    report = audit(index, codes, signal, names, meta["id"].to_numpy(), groups=groups, pool=pool, config=config,
                   with_map=with_map, map_cache=run.path / "audits", map_key=f"{store.fingerprint}:{run.model_digest}", compute=compute,
                   meta=meta, exclude_columns=excluded,
                   term_features=term_features(labels, (signal.column, *derived), positive_terms(run)))
    report.run = run
    report.info["derived_columns"] = derived
    report.info["excluded_columns"] = sorted(excluded)
    rename_from_evidence(report, run, exclude_columns=tuple(c for c in (signal.column, *derived) if c))
    if llm is not None and report.slices:
        from sae.audit.naming import name_slices

        report.info["llm_naming_errors"] = name_slices(report, llm)
    if save:
        report.save(folder)
    return report
