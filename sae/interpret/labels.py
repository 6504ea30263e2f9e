"""Label a whole SAE run: evidence -> labeler -> scores, persisted as it goes and resumable.

On disk, next to the SAE (``saes/<run>/``):
- ``labels-<labeler>.parquet``: one row per feature (label, description, confidence, evidence, status,
  error, flags) with its scores (detection, intruder, metadata_agreement, contradiction, duplicate, judge);
  ``flags`` names the instruction-like patterns a label or description matches (``""``: none; see
  :data:`sae.llm_safety.INSTRUCTION_PATTERNS`);
- ``labels-<labeler>.json``: the summary, the labeler and judge settings, the store fingerprint;
- ``.labels-<labeler>.progress.jsonl`` while a run is in flight: each label is appended (and
  fsync'd) the moment it lands, so a crash loses nothing and a re-run asks only for what is missing.

A run over some features (``features=...``, ``sae label --features 0-4``) merges: the features labeled
now replace their rows, every other feature keeps its row from the previous file (only when that file
is for the same store fingerprint and labeler; a stale one is not merged, with a warning and a note in
the summary), and the summary and duplicate flags are recomputed over the merged table.
"""

from __future__ import annotations

import html
import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sae._io import atomic_path, atomic_write_text
from sae._lock import exclusive
from sae.errors import LabelError, StaleArtifactError
from sae.interpret.baselines import label_baselines
from sae.interpret.edits import apply_edits, read_edits, record_edit
from sae.interpret.evidence import EvidenceBuilder, EvidenceConfig, FeatureEvidence
from sae.interpret.label_types import LIST_FIELDS
from sae.interpret.labelers import DEAD, FAILED, OK, UNEXPLAINED, Label, Labeler, MetadataLabeler
from sae.interpret.scoring import EmbeddingJudge, Judge, LabelScorer, LLMJudge, ScoringConfig, collision_flags, duplicate_flags
from sae.llm_safety import instruction_flags

if TYPE_CHECKING:
    from sae.run import Run
    from sae.store import Store

LABEL_COLUMNS = ["feature", "label", "description", "confidence", "evidence", "labeler", "status", "error",
                 "terms", "term_columns", "coverage", "unsupported"]


def _as_record(rec: dict) -> dict:
    """A stored label row as a :meth:`Label.record` dict (files from before a column existed get it empty)."""
    out = {c: rec.get(c) for c in LABEL_COLUMNS}
    for c in LIST_FIELDS:
        v = out[c]
        out[c] = list(v) if v is not None and not (isinstance(v, float) and np.isnan(v)) else []
    return out


def labels_path(run_path: Path, labeler_id: str) -> Path:
    return Path(run_path) / f"labels-{labeler_id}.parquet"


def _progress_path(run_path: Path, labeler_id: str) -> Path:
    return Path(run_path) / f".labels-{labeler_id}.progress.jsonl"


@dataclass
class LabelSet:
    """Labels and scores of one labeler for one SAE run."""

    frame: pd.DataFrame
    summary: dict[str, Any]
    labeler: str
    path: Path | None = None
    run: object | None = field(default=None, repr=False)
    """The SAE run the labels belong to (set by :func:`load_labels`; the live view browses it)."""

    def get(self, feature: int) -> pd.Series:
        hit = self.frame[self.frame["feature"] == int(feature)]
        if hit.empty:
            raise LabelError(f"feature {feature} has no label in {self.labeler}")
        return hit.iloc[0]

    def edit(self, feature: int, label: str, description: str = "", author: str | None = None) -> dict:
        """Replace a feature's label by hand; recorded with provenance in ``label-edits.jsonl`` next to the labels."""
        if self.path is None:
            raise LabelError("these labels were not loaded from a run; nothing to record the edit next to")
        old = self.get(feature)
        rec = record_edit(self.path.parent, int(feature), label, description=description, author=author,
                          replaced_labeler=self.labeler, replaced_label=str(old["label"]))
        i = self.frame.index[self.frame["feature"] == int(feature)][0]
        self.frame.loc[i, ["label", "edited_by", "edited_at", "status"]] = [rec["label"], rec["author"], rec["time"], OK]
        if rec["description"]:
            self.frame.loc[i, "description"] = rec["description"]
        return rec

    def mapping(self, exclude_columns: Sequence[str] = ()) -> dict[int, str]:
        """feature -> label of every labeled feature; ``exclude_columns``: labels re-read without the terms of
        those columns (an audit never names a slice by its own failure column), features left with none dropped."""
        ok = self.frame[self.frame["status"] == OK]
        if not exclude_columns or "term_columns" not in ok:
            return dict(zip(ok["feature"].astype(int), ok["label"]))
        out = {}
        drop = set(exclude_columns)
        for f, label, terms, cols in zip(ok["feature"].astype(int), ok["label"], ok["terms"], ok["term_columns"]):
            if terms is None or not len(terms) or not drop & set(cols):
                out[f] = label
            elif kept := [t for t, c in zip(terms, cols) if c not in drop]:
                out[f] = ", ".join(kept)
        return out

    def term_columns(self) -> dict[int, dict[str, str]]:
        """feature -> {label term: the column it came from} for every labeled feature with typed terms (the search
        planner reads it to keep values of one metadata column from answering for each other)."""
        ok = self.frame[self.frame["status"] == OK]
        if "term_columns" not in ok:
            return {}
        return {f: {str(t): str(c) for t, c in zip(terms, cols)}
                for f, terms, cols in zip(ok["feature"].astype(int), ok["terms"], ok["term_columns"])
                if terms is not None and cols is not None and len(terms) == len(cols)}

    def _ranked(self) -> pd.DataFrame:
        ok = self.frame[self.frame["status"] == OK].copy()
        if "detection" in ok:
            ok = ok[ok["detection"].notna()] if ok["detection"].notna().any() else ok
            return ok.sort_values(["detection", "metadata_agreement", "confidence"], ascending=False, kind="stable")
        return ok.sort_values("confidence", ascending=False, kind="stable")

    def best(self, n: int = 5) -> pd.DataFrame:
        return self._ranked().head(n)

    def worst(self, n: int = 5) -> pd.DataFrame:
        return self._ranked().tail(n).iloc[::-1]

    def _repr_mimebundle_(self, include=None, exclude=None) -> dict:
        from sae.display import bundle

        return bundle(self._repr_html_(), f"LabelSet({self.labeler}, {len(self.frame)} features)",
                      "label_set" if self.run is not None else None, self)

    def _repr_html_(self) -> str:
        s = {k: v for k, v in self.summary.items() if not isinstance(v, (dict, list))}
        head = ", ".join(f"{html.escape(str(k))}: {html.escape(f'{v:.3f}' if isinstance(v, float) else str(v))}" for k, v in s.items())
        cols = [c for c in ["feature", "label", "confidence", "detection", "intruder", "metadata_agreement", "duplicate"] if c in self.frame]
        return f"<div><b>labels</b> {html.escape(self.labeler)}<br>{head}{self.best(10)[cols].to_html(index=False)}</div>"


def _read_progress(path: Path) -> dict[int, dict]:
    done: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # the last line of a crashed run may be torn
            done[int(rec["feature"])] = rec
    return done


def _same_sources(doc: dict, fingerprint: str, model_digest: str) -> bool:
    """Whether a labels document was made from this store and this model (files from before the model
    digest was recorded count as this model's)."""
    return doc.get("store_fingerprint") == fingerprint and doc.get("model_digest", model_digest) == model_digest


def _previous(run_path: Path, labeler_id: str, fingerprint: str, model_digest: str = "") -> dict[int, dict]:
    """Finished labels from an earlier run of the same labeler on the same store and model (failures excluded)."""
    done: dict[int, dict] = {}
    path = labels_path(run_path, labeler_id)
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists() and _same_sources(json.loads(meta.read_text()), fingerprint, model_digest):
        for rec in pd.read_parquet(path).to_dict("records"):
            done[int(rec["feature"])] = _as_record(rec)
    done.update(_read_progress(_progress_path(run_path, labeler_id)))
    return {f: r for f, r in done.items() if r["status"] != FAILED}


def sibling_labels(builder: EvidenceBuilder, packs: dict[int, FeatureEvidence]) -> dict[int, str]:
    """Offline labels of every sibling of the packs (what an LLM is told related features are called)."""
    sibs = {int(g) for p in packs.values() for g in p.siblings["feature"]}
    extra = [builder.pack(g) for g in sorted(sibs - set(packs))]
    offline = MetadataLabeler()
    offline.prepare(builder)
    labels = offline.label_many(list(packs.values()) + extra, progress=False)
    return {lab.feature: lab.label for lab in labels if lab.status == OK}


def _make_judge(judge: str | Judge | None, labeler: Labeler) -> Judge | None:
    if judge is None or not isinstance(judge, str):
        return judge
    if judge == "embedding":
        return EmbeddingJudge()
    if judge == "terms":
        from sae.interpret.term_judge import TermJudge

        return TermJudge()
    if judge == "llm":
        client = getattr(labeler, "client", None)
        if client is None:
            raise LabelError("the LLM judge needs an LLM: use an LLM labeler or pass LLMJudge(client)")
        return LLMJudge(client)
    raise LabelError(f"unknown judge {judge!r}: use 'embedding', 'terms', 'llm' or None")


def label_flags(frame: pd.DataFrame) -> pd.Series:
    """Per row, the instruction-like patterns its label or description matches, comma-separated ("" = none)."""
    texts = frame["label"].fillna("").astype(str) + " " + frame["description"].fillna("").astype(str)
    return pd.Series([", ".join(instruction_flags(t)) for t in texts], index=frame.index, dtype=object)


def _merge_previous(run_path: Path, labeler_id: str, fingerprint: str, frame: pd.DataFrame, model_digest: str = "") -> tuple[pd.DataFrame, str]:
    """``frame`` (the features labeled now) over the previous file's other rows, and a note saying what happened."""
    path = labels_path(run_path, labeler_id)
    if not path.exists():
        return frame, ""
    try:
        doc = json.loads(path.with_suffix(".json").read_text())
        old = pd.read_parquet(path)
    except (OSError, ValueError) as e:
        doc, old, why = {}, None, f"it cannot be read ({e})"
    else:
        why = ("it was made for another version of the store or another model" if not _same_sources(doc, fingerprint, model_digest) else
               f"it was written by {doc.get('labeler')!r}" if doc.get("labeler") not in (None, labeler_id) else "")
    if old is None or why:
        note = f"previous {path.name} not merged: {why}; it is replaced by the {len(frame)} features labeled now"
        warnings.warn(note, stacklevel=3)
        return frame, note
    keep = old[~old["feature"].isin(frame["feature"])].drop(columns=["flags"], errors="ignore")
    merged = pd.concat([frame, keep], ignore_index=True) if len(keep) else frame
    merged = merged.sort_values("feature", kind="stable").reset_index(drop=True)
    if "duplicate" in merged:
        ok = merged["status"].eq(OK).to_numpy()
        merged["duplicate"] = False
        merged.loc[ok, "duplicate"] = duplicate_flags(merged.loc[ok, "label"]).to_numpy()
    if "contradiction" in merged:
        merged["contradiction"] = merged["contradiction"].fillna("")
    return merged, f"kept {len(keep)} features from the previous labels; {len(frame)} labeled in this run"


def summarize(frame: pd.DataFrame) -> dict[str, Any]:
    """Headline numbers: counts per status, duplicate rate and mean scores (with their chance levels)."""
    ok = frame[frame["status"] == OK]
    out: dict[str, Any] = {"features": int(len(frame))}
    out.update({s: int((frame["status"] == s).sum()) for s in (OK, UNEXPLAINED, DEAD, FAILED)})
    if "flags" in frame:
        out["flagged"] = int(frame["flags"].astype(str).ne("").sum())
    if "unsupported" in frame and len(ok):
        out["unsupported"] = int(sum(1 for u in ok["unsupported"] if u is not None and len(u)))
    if "duplicate" in frame and len(ok):
        out["duplicate_rate"] = float(ok["duplicate"].astype(bool).mean())
        if "collision" in ok:
            out["collision_rate"] = float(ok["collision"].astype(bool).mean())
        for col in ("detection", "detection_sibling", "intruder", "sail_top2", "metadata_agreement"):
            out[col] = float(ok[col].mean()) if col in ok and ok[col].notna().any() else float("nan")
        if "detection" in ok and ok["detection"].notna().any():
            out["detection_median"] = float(ok["detection"].median())
        if len(ok) and "coverage" in ok:
            cov = [min(c) for c in ok["coverage"] if c is not None and len(c)]
            out["min_term_coverage"] = float(min(cov)) if cov else float("nan")
        out["contradictions"] = int(ok["contradiction"].astype(str).ne("").sum())
        out["chance"] = {"detection": 0.5, "detection_sibling": 0.5, "intruder": 0.2, "sail_top2": 0.4}
    return out


def why_no_labels(builder: EvidenceBuilder, frame: pd.DataFrame, labeler: Labeler) -> str:
    """Why a labeling run named no feature, and what to do about it."""
    if frame.empty:
        return "no features were labeled"
    if frame["status"].eq(DEAD).all():
        return "every feature is dead (never fires): retrain the SAE"
    if frame["status"].eq(FAILED).all():
        return f"every LLM call failed (first error: {frame['error'].iloc[0]}): check --base-url, --model and the server"
    if not builder.has_terms:
        return ("the store has no metadata columns that can name a feature and no text: re-ingest with metadata "
                "(sae ingest --meta), name a free-text column (sae label --text COLUMN) or add text previews, or label with an LLM (--labeler llm)")
    return (f"no term ({builder.terms.n_terms} metadata values and text phrases) is shared by at least half of any feature's "
            "items: the features may be too broad (try a larger SAE or a smaller k) or the metadata may not describe "
            "what the embeddings encode; an LLM labeler (--labeler llm) can read the items themselves")


def label_run(run: Run, labeler: Labeler, *, features: Sequence[int] | None = None, builder: EvidenceBuilder | None = None,
              evidence: EvidenceConfig | None = None, judge: str | Judge | None = "embedding",
              scoring: ScoringConfig | None = None, progress: bool = True, with_baselines: bool = True) -> LabelSet:
    """Label (and score) the features of an :class:`~sae.run.Run`; resumable, see the module docstring.
    ``with_baselines``: also score shuffled labels and a random SAE's labels (offline labelers only), for
    the summary. The run is locked meanwhile (a second labeler of the same run is refused, naming the holder)."""
    with exclusive(run.path, f"sae label {run.name}"):
        return _label_run(run, labeler, features=features, builder=builder, evidence=evidence, judge=judge, scoring=scoring,
                          progress=progress, with_baselines=with_baselines)


def _label_run(run: Run, labeler: Labeler, *, features: Sequence[int] | None, builder: EvidenceBuilder | None,
               evidence: EvidenceConfig | None, judge: str | Judge | None, scoring: ScoringConfig | None, progress: bool,
               with_baselines: bool = True) -> LabelSet:
    store = run.verify().store
    builder = builder or EvidenceBuilder.of(run, evidence, progress=progress)
    feats = list(range(builder.codes.n_latents)) if features is None else sorted({builder.codes._check_feature(f) for f in features})
    packs = {p.feature: p for p in builder.packs(feats)}
    if hasattr(labeler, "prepare"):
        labeler.prepare(builder)  # e.g. the offline labeler decides whether the store's text names features
    if hasattr(labeler, "sibling_labels") and not labeler.sibling_labels:
        labeler.sibling_labels = sibling_labels(builder, packs)
    # offline labelers are instant and deterministic: always recompute (their code may have changed)
    done = _previous(run.path, labeler.id, store.fingerprint, run.model_digest) if getattr(labeler, "resumable", True) else {}
    todo = [packs[f] for f in feats if f not in done]
    prog = _progress_path(run.path, labeler.id)
    t0 = time.perf_counter()
    with open(prog, "a") as fh:
        def persist(label: Label) -> None:
            fh.write(json.dumps(label.record()) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            done[label.feature] = label.record()

        labeler.label_many(todo, on_label=persist, progress=progress)
    frame = pd.DataFrame([done[f] for f in feats if f in done], columns=LABEL_COLUMNS)
    frame["feature"] = frame["feature"].astype(np.int64)
    judge_obj = _make_judge(judge, labeler)
    baselines, scorer = None, None
    if judge_obj is not None:
        scorer = LabelScorer(builder, judge_obj, scoring)
        frame = frame.merge(scorer.score(frame, packs, progress=progress), on="feature", how="left")
        if with_baselines and frame["status"].eq(OK).sum() >= 2:
            baselines = label_baselines(run, labeler, scorer, frame, packs, seed=(scoring or ScoringConfig()).seed, progress=progress)
    note = ""
    if features is not None:  # a partial run: every other feature keeps its previous label
        frame, note = _merge_previous(run.path, labeler.id, store.fingerprint, frame, run.model_digest)
        if scorer is not None and "collision" in frame:  # near-duplicates across the merged table
            ok = frame["status"].eq(OK).to_numpy()
            frame["collision"] = False
            frame.loc[ok, "collision"] = collision_flags(frame.loc[ok, "label"], scorer.embed, scorer.cfg.collision_threshold).to_numpy()
    frame["flags"] = label_flags(frame)
    summary = summarize(frame)
    if baselines is not None:
        summary["baselines"] = baselines
    if summary.get(OK, 0) == 0:
        summary["why_no_labels"] = why_no_labels(builder, frame, labeler)
    if note:
        summary["previous"] = note
    summary["labeled_now"] = len(todo)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    out = _save(run, labeler, frame, summary, store.fingerprint, judge_obj, builder.cfg, scoring, prog)
    run.refresh("labels")  # the run's cached labels are stale now
    return out


def _save(run, labeler, frame, summary, fingerprint, judge, evidence_cfg, scoring, prog: Path) -> LabelSet:
    path = labels_path(run.path, labeler.id)
    client = getattr(labeler, "client", None)
    doc = {"labeler": labeler.id, "sae_run": run.name, "store_fingerprint": fingerprint, "model_digest": run.model_digest,
           "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "judge": getattr(judge, "name", None), "evidence_config": asdict(evidence_cfg),
           "scoring_config": asdict(scoring or ScoringConfig()), "llm": client.config.public() if client else None,
           "summary": summary}
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)
    atomic_write_text(path.with_suffix(".json"), json.dumps(doc, indent=2, default=float))
    prog.unlink(missing_ok=True)
    return LabelSet(frame, summary, labeler.id, path)


def load_labels(run: Run, labeler: str | None = None, store: Store | None = None, edits: bool = True) -> LabelSet:
    """The labels of ``labeler`` (default: the most recently written) for a run, with hand edits applied
    (``edits=False``: the labeler's own); refuses stale ones."""
    files = sorted(Path(run.path).glob("labels-*.parquet"), key=lambda p: p.stat().st_mtime)
    if labeler is not None:
        files = [p for p in files if p.stem == f"labels-{labeler}"]
    if not files:
        raise LabelError(f"no labels{' from ' + labeler if labeler else ''} for {run.name}; run `sae label {run.ws.path}`")
    path = files[-1]
    doc = json.loads(path.with_suffix(".json").read_text())
    store = store or run.store
    if doc.get("store_fingerprint") != store.fingerprint:
        raise StaleArtifactError(f"{path.name} was made for another version of the store; re-run `sae label`")
    if doc.get("model_digest") and doc["model_digest"] != run.model_digest:
        raise StaleArtifactError(f"{path.name} was made for another model of run {run.name} (it was retrained); re-run `sae label`")
    frame = apply_edits(pd.read_parquet(path), read_edits(run.path)) if edits else pd.read_parquet(path)
    frame["flags"] = label_flags(frame)  # of the text as shown (hand edits included), by today's pattern list
    return LabelSet(frame, doc.get("summary", {}), doc["labeler"], path, run=run)
