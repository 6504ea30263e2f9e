"""The offline labeler's promises, checked against the data itself.

Every named term must cover at least half of the feature's active items (recomputed here from the
codes and the raw metadata / report text, not from the enrichment table), at most three terms are
named, excluded columns never name a feature, a feature nothing covers is ``unexplained`` with the
closest term and its share, and report phrases respect negation ("no pleural effusion" is not
"pleural effusion").
"""

from __future__ import annotations

import re
import shutil
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from sae.cli import main
from sae.errors import SaeError
from sae.interpret import EvidenceBuilder, EvidenceConfig, MetadataLabeler, label_run
from sae.interpret.baselines import MemoryCodes
from sae.interpret.phrases import STOP, PhraseConfig, build_phrases, stem, text_phrases

# -- independent recomputation of a term's items --------------------------------------------------
_TOKEN = re.compile(r"[a-z][a-z\-]*[a-z]|[a-z]|,")
NONE_VALUES = {"none", "no", "false", "0"}


def _tertiles(x: np.ndarray) -> dict[str, np.ndarray]:
    lo, hi = np.nanquantile(x, [1 / 3, 2 / 3])
    return {"low": x < lo, "medium": (x >= lo) & (x < hi), "high": x >= hi}


def _ranges(x: np.ndarray, bins: int = 6) -> dict[str, np.ndarray]:
    edges = np.unique(np.nanquantile(x, np.linspace(0, 1, bins + 1)))
    out = {}
    for i, (a, b) in enumerate(pairwise(edges)):
        last = i == len(edges) - 2
        out[f"{a:.3g}-{b:.3g}"] = (x >= a) & ((x <= b) if last else (x < b))
    return out


def term_items(meta: pd.DataFrame, kinds: dict[str, str], texts, column: str, term: str) -> np.ndarray:
    """Which items carry ``term`` of ``column``, straight from the metadata (or the report text)."""
    if column == "text":  # a report phrase: the stemmed phrase among the phrases of each item's report
        key = " ".join(stem(w) for w in term.split())
        return np.array([key in text_phrases(t) for t in texts], bool)
    name = column.replace("_", " ")
    values = meta[column]
    if kinds[column] == "bool":
        assert term in (name, f"not {name}"), term
        return values.to_numpy(bool) if term == name else ~values.to_numpy(bool)
    strs = values.astype(str)
    matched = [v for v in strs.unique()
               if term in (v, f"{v} {name}", f"{name} {v}") or (v.lower() in NONE_VALUES and term == f"no {name}")]
    if matched:
        assert len(matched) == 1, (term, matched)
        return strs.eq(matched[0]).to_numpy()
    x = pd.to_numeric(values, errors="coerce").to_numpy(float)
    first, _, rest = term.partition(" ")
    if rest == name and first in ("low", "medium", "high"):
        return _tertiles(x)[first]
    assert term.startswith(name + " "), term
    return _ranges(x)[term[len(name) + 1 :]]


def check_ok_labels(frame: pd.DataFrame, codes_csr: sp.csr_matrix, meta: pd.DataFrame, kinds: dict[str, str], texts=None) -> int:
    """Every ok label: 1-3 terms, one per metadata column, each covering >= 50% of the active items, with the
    stored coverage equal to the share recomputed from the codes and the data. Returns how many terms were checked."""
    checked = 0
    codes_csr = sp.csc_matrix(codes_csr)
    for r in frame[frame["status"] == "ok"].itertuples():
        terms, cols, cov = list(r.terms), list(r.term_columns), list(r.coverage)
        assert 1 <= len(terms) <= 3 and len(terms) == len(cols) == len(cov), r
        assert r.label == ", ".join(terms)
        meta_cols = [c for c in cols if c != "text"]
        assert len(set(meta_cols)) == len(meta_cols), r.label  # at most one term per metadata column
        lo, hi = codes_csr.indptr[r.feature], codes_csr.indptr[r.feature + 1]
        active = np.unique(codes_csr.indices[lo:hi][codes_csr.data[lo:hi] != 0])
        assert len(active) > 0
        for term, col, c in zip(terms, cols, cov):
            share = float(term_items(meta, kinds, texts, col, term)[active].sum()) / len(active)
            assert c >= 0.5 and share >= 0.5, (r.label, term, share)
            assert abs(round(share, 4) - c) < 1e-6, (r.label, term, share, c)  # stored to 4 decimals
            checked += 1
    for r in frame[frame["status"] != "ok"].itertuples():
        assert len(r.terms) == 0 and len(r.coverage) == 0
    return checked


# -- the small MNI demo: real metadata, a real SAE ---------------------------------------------------
@pytest.fixture(scope="module")
def demo_run(labeled_ws_template, tmp_path_factory):
    """A private copy of the trained demo workspace (labels written here stay here)."""
    from sae.run import Run, Workspace

    ws = Workspace(tmp_path_factory.mktemp("honest") / "ws")
    shutil.copytree(labeled_ws_template.path, ws.path)
    return ws, Run.find(ws)


@pytest.fixture(scope="module")
def demo_labels(demo_run):
    ws, run = demo_run
    return label_run(run, MetadataLabeler(), judge=None, progress=False)


def test_every_named_term_covers_half_the_active_items(demo_run, demo_labels):
    ws, run = demo_run
    store = ws.open_store()
    frame = demo_labels.frame
    assert frame["status"].eq("ok").sum() > 0.5 * len(frame) and demo_labels.labeler == "metadata"
    checked = check_ok_labels(frame, run.codes.to_csr(), store.meta(), store.columns)
    assert checked >= frame["status"].eq("ok").sum()
    assert frame["term_columns"].map(lambda c: "volume" in list(c)).sum() == 0  # the group key never names a feature


def test_excluded_columns_never_name_a_feature(demo_run, demo_labels):
    ws, run = demo_run
    assert any("quality_fail" in list(c) for c in demo_labels.frame["term_columns"])  # it would, unless excluded
    cfg = EvidenceConfig(exclude_columns=("quality_fail", "severity"))
    labels = label_run(run, MetadataLabeler(), evidence=cfg, judge=None, progress=False)
    cols = {c for cs in labels.frame["term_columns"] for c in cs}
    assert cols and not cols & {"quality_fail", "severity", "volume"}
    assert not labels.frame["label"].str.contains("quality fail|severity").any()
    assert {"quality_fail", "severity", "volume"} <= EvidenceBuilder.of(run, cfg, progress=False).excluded


def test_an_unknown_excluded_column_is_an_error_naming_the_columns(demo_run, capsys):
    ws, run = demo_run
    with pytest.raises(SaeError, match=r"no_such_column.*columns: .*orientation.*quality_fail"):
        label_run(run, MetadataLabeler(), evidence=EvidenceConfig(exclude_columns=("no_such_column",)), judge=None, progress=False)
    assert main(["label", str(ws.path), "--exclude-column", "no_such_column", "--judge", "none", "--no-baselines"]) == 2
    err = capsys.readouterr().err
    assert "no_such_column" in err and "orientation" in err


def test_a_feature_no_term_covers_is_unexplained_and_says_what_came_closest(demo_run):
    """Hand-made codes over the real demo store: feature 0 fires on every motion slice and on more clean ones
    (motion covers ~43%), feature 1 on exactly the axial slices, feature 2 never."""
    ws, run = demo_run
    store = ws.open_store()
    meta = store.meta()
    rng = np.random.default_rng(0)
    motion = np.flatnonzero(meta["artifact"].eq("motion").to_numpy())
    clean = np.flatnonzero(meta["artifact"].eq("none").to_numpy())
    others = rng.choice(clean, size=int(len(motion) * 1.3), replace=False)
    rows0 = np.sort(np.concatenate([motion, others]))
    axial = np.flatnonzero(meta["orientation"].eq("axial").to_numpy())
    codes = sp.lil_matrix((store.n_rows, 3), dtype=np.float32)
    codes[rows0, 0] = rng.uniform(0.5, 2, len(rows0))[:, None]
    codes[axial, 1] = 1.0
    mem = MemoryCodes(codes.tocsr(), store.fingerprint)
    builder = EvidenceBuilder(store, mem, progress=False, postings=mem.postings)
    labels = {lab.feature: lab for lab in MetadataLabeler().label_many(builder.packs(), progress=False)}
    share = len(motion) / len(rows0)
    assert 0.3 < share < 0.5 and len(motion) >= 10
    lab = labels[0]
    assert lab.status == "unexplained" and lab.label == "unexplained" and lab.terms == ()
    assert "50%" in lab.description and f"'motion artifact', covers {share:.0%} of them" in lab.description
    assert labels[1].status == "ok" and labels[1].terms[0] == "axial orientation" and labels[1].coverage[0] == 1.0
    assert labels[2].status == "dead"


# -- report phrases --------------------------------------------------------------------------------
def test_negation_makes_a_separate_no_term():
    assert "no pleural effusion" in text_phrases("No pleural effusion.")
    assert not {"pleural effusion", "effusion", "pleural"} & set(text_phrases("No pleural effusion."))
    assert "no pleural effusion" in text_phrases("Pleural effusion is not seen.")
    assert "pleural effusion" not in text_phrases("Pleural effusion is not seen.")
    mixed = text_phrases("No effusion but a small nodule.")
    assert "no effusion" in mixed and "nodule" in mixed and "no nodule" not in mixed and "effusion" not in mixed
    listed = text_phrases("No fracture, pneumothorax or effusion.")
    assert {"no fracture", "no pneumothorax", "no effusion"} <= set(listed)
    assert not {"fracture", "pneumothorax", "effusion"} & set(listed)
    assert "cardiomegaly" in text_phrases("Cardiomegaly. No pneumothorax.")  # a sentence end closes the scope
    assert "no pneumonia" in text_phrases("There is no evidence of pneumonia.")


def test_plurals_fold_and_phrases_never_start_or_end_with_a_stop_word():
    ph = text_phrases("Bilateral pleural effusions. Small opacities in the lungs.")
    assert ph["pleural effusion"] == "pleural effusions" and ph["opacity"] == "opacities" and "lung" not in ph  # not alone
    assert "effusions" not in ph
    for text in ("The heart is enlarged and there is a small nodule in the left lung.", "No evidence of a fracture of the rib."):
        for surface in text_phrases(text).values():
            words = surface.removeprefix("no ").split()
            assert words[0] not in STOP and words[-1] not in STOP, surface
    table = build_phrases(["Cardiomegaly. Effusions."] * 5 + ["Cardiomegaly. Effusion."] * 5
                          + ["Clear lungs."] * 60, PhraseConfig(min_df=2))
    row = table.phrases.set_index("key").loc["effusion"]
    assert row["df"] == 10 and row["text"] in ("effusion", "effusions")  # one term, in its most common form


def test_boilerplate_is_no_term():
    texts = [f"No pneumothorax. {'Cardiomegaly.' if i % 10 == 0 else 'Lungs are clear.'}" for i in range(40)]
    table = build_phrases(texts, PhraseConfig(min_df=2))
    keys = set(table.phrases["key"])
    assert "cardiomegaly" in keys and "no pneumothorax" not in keys and "no pneumothorax" in table.dropped_boilerplate
    assert "clear lung" not in keys  # in 90% of the texts: boilerplate too


VOCAB = ["no", "not", "seen", "without", "is", "are", "the", "a", "of", "and", "or", "but", "however", ",", ".", ";",
         "evidence", "pleural", "effusion", "effusions", "nodule", "nodules", "opacities", "cardiomegaly", "small",
         "left", "heart", "size", "normal", "resolved", "negative", "for", "free", "1.", "XXXX", "e-mail", "ü"]


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=200), st.lists(st.sampled_from(VOCAB), max_size=40).map(" ".join)))
def test_text_phrases_never_raise_and_name_only_words_of_the_text(text):
    ph = text_phrases(text)
    assert ph == text_phrases(text)  # a function of the text
    flat = " " + " ".join(_TOKEN.findall(text.lower())) + " "
    for key, surface in ph.items():
        negated = key.startswith("no ")
        assert surface.startswith("no ") == negated
        words = surface[3:].split() if negated else surface.split()
        assert 1 <= len(words) <= 3
        assert key == ("no " if negated else "") + " ".join(stem(w) for w in words)
        assert f" {' '.join(words)} " in flat, (text, surface)  # contiguous words of the text
        assert words[0] not in STOP and words[-1] not in STOP


# -- a report store: the text labeler ------------------------------------------------------------------
def _report_store(tmp_path, n: int = 800, d: int = 16):
    """Reports whose embeddings carry one direction for cardiomegaly, one for a pleural effusion and another
    for a *negated* one ("no pleural effusion"); a ``finding`` column that gives cardiomegaly away is excluded
    by the store's provenance (``label_exclude``)."""
    from sae.models import SAEConfig
    from sae.pipeline import train_run
    from sae.run import Workspace
    from sae.store import Store
    from sae.train import TrainConfig

    rng = np.random.default_rng(0)
    cardio = rng.random(n) < 0.12  # findings are rarer than the 15% boilerplate cut (as in real reports)
    eff = rng.choice(["pos", "neg", "none"], n, p=[0.12, 0.12, 0.76])
    dirs = rng.normal(size=(3, d))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    x = rng.normal(size=(n, d)) * 0.3 + 3 * (cardio[:, None] * dirs[0] + (eff == "pos")[:, None] * dirs[1]
                                              + (eff == "neg")[:, None] * dirs[2])
    heart = ["Cardiomegaly.", "Mild cardiomegaly is present.", "The heart is enlarged, cardiomegaly."]
    pos = ["Small left pleural effusion.", "Bilateral pleural effusions.", "Right pleural effusion."]
    neg = ["No pleural effusion.", "Pleural effusion is not seen.", "No pleural effusion or pneumothorax."]
    texts = [" ".join([rng.choice(heart) if c else "Heart size is normal.",
                       rng.choice(pos) if e == "pos" else rng.choice(neg) if e == "neg" else "", "No pneumothorax."])
             for c, e in zip(cardio, eff)]
    meta = pd.DataFrame({"finding": np.where(cardio, "cardiomegaly", "none"), "view": rng.choice(["pa", "ap"], n)})
    ws = Workspace(tmp_path / "ws")
    ws.path.mkdir()
    with Store.create(ws.store_path, d, provenance={"label_exclude": ["finding"]}) as store:
        store.append(x.astype(np.float32), [f"r{i}" for i in range(n)], meta, texts=texts)
    run = train_run(ws, SAEConfig(d_in=d, n_latents=16, k=3), TrainConfig(batch_size=64, epochs=5), progress=False, evaluate=False)
    return ws, run, cardio, eff


def test_reports_name_features_by_their_phrases_and_respect_negation(tmp_path):
    ws, run, cardio, eff = _report_store(tmp_path)
    labels = label_run(run, MetadataLabeler(), judge=None, progress=False)
    frame = labels.frame
    assert labels.labeler == "text" and frame["labeler"].eq("text").all()
    store = ws.open_store()
    texts = store.texts(np.arange(store.n_rows))
    check_ok_labels(frame, run.codes.to_csr(), store.meta(), store.columns, texts)
    ok = frame[frame["status"] == "ok"]
    assert ok["terms"].map(lambda t: "cardiomegaly" in list(t)).any()
    assert not any("finding" in list(c) for c in ok["term_columns"])  # excluded by the store's provenance
    assert not ok["label"].str.contains("cardiomegaly finding").any()
    csc = sp.csc_matrix(run.codes.to_csr())
    affirmed = {"pleural effusion", "effusion", "pleural", "pleural effusions"}
    seen_negated = 0
    for r in ok.itertuples():
        active = csc.indices[csc.indptr[r.feature] : csc.indptr[r.feature + 1]]
        negated_share = float((eff[active] == "neg").mean())
        if negated_share >= 0.5:  # a feature of reports saying "no pleural effusion" ...
            seen_negated += 1
            assert not affirmed & set(r.terms), (r.label, negated_share)  # ... is never named "pleural effusion"
        if affirmed & set(r.terms):
            assert float((eff[active] == "pos").mean()) >= 0.5, r.label
    assert seen_negated >= 1
    assert ok["terms"].map(lambda t: "no pleural effusion" in list(t)).any()
    assert not ok["label"].str.contains("pneumothorax").any()  # in every report: boilerplate


def test_a_store_with_nothing_to_name_features_says_why(tmp_path):
    from sae.models import SAEConfig
    from sae.pipeline import train_run
    from sae.run import Workspace
    from sae.store import Store
    from sae.train import TrainConfig

    rng = np.random.default_rng(0)
    ws = Workspace(tmp_path / "ws")
    ws.path.mkdir()
    with Store.create(ws.store_path, 8) as store:
        store.append(rng.normal(size=(300, 8)).astype(np.float32), [f"x{i}" for i in range(300)])
    run = train_run(ws, SAEConfig(d_in=8, n_latents=8, k=2), TrainConfig(batch_size=64, epochs=2), progress=False, evaluate=False)
    labels = label_run(run, MetadataLabeler(), judge=None, progress=False)
    assert labels.summary["ok"] == 0 and labels.frame["status"].isin(["unexplained", "dead"]).all()
    why = labels.summary["why_no_labels"]
    assert "metadata" in why and "text" in why and "LLM" in why
    # search tells "labeled, nothing explained" (with the reason) from "not labeled yet"; by example still works
    from sae.search.searcher import Searcher

    searcher = Searcher(run)
    with pytest.raises(SaeError, match="labeled .* but no feature has a label") as e:
        searcher.search("anything")
    assert "metadata" in str(e.value) and "by example" in str(e.value)
    assert len(searcher.search(like=[0]).hits) > 0


def test_search_before_labeling_says_run_sae_label(tmp_path):
    from sae.errors import LabelError
    from sae.models import SAEConfig
    from sae.pipeline import train_run
    from sae.run import Workspace
    from sae.search.searcher import Searcher
    from sae.store import Store
    from sae.train import TrainConfig

    ws = Workspace(tmp_path / "ws")
    with Store.create(ws.store_path, 8) as store:
        store.append(np.random.default_rng(1).normal(size=(200, 8)).astype(np.float32), [f"x{i}" for i in range(200)])
    run = train_run(ws, SAEConfig(d_in=8, n_latents=8, k=2), TrainConfig(batch_size=64, epochs=1), progress=False, evaluate=False)
    with pytest.raises(LabelError, match="run `sae label"):
        Searcher(run)


def test_a_label_part_stating_an_absence_never_answers_a_presence():
    """"pleural effusion" must not be planned onto a feature labeled "no pleural effusion" (its opposite)."""
    from sae.search.planner import EmbeddingPlanner

    planner = EmbeddingPlanner({0: "no pleural effusion", 1: "cardiomegaly", 2: "pleural effusion, small", 3: "no focal airspace disease"})
    sims = dict(zip(planner._features.tolist(), planner.similarity("pleural effusion").tolist()))
    assert sims[2] > 0.5 and sims[0] < 0 and sims[3] < 0
    plan = planner.plan("pleural effusion")
    named = {c.feature for c in plan.concepts}
    assert 0 not in named and 3 not in named and 2 in named


def test_affirmed_phrases_in_labels_respect_negation_scopes():
    from sae.interpret.support import has_phrase

    assert not has_phrase("no focal airspace disease", "airspace disease", affirmed=True)
    assert has_phrase("airspace disease", "airspace disease", affirmed=True)
    assert has_phrase("cardiomegaly but no effusion", "cardiomegaly", affirmed=True)
    assert not has_phrase("cardiomegaly but no effusion", "effusion", affirmed=True)


def test_every_named_term_is_carried_by_most_of_the_top_items(demo_run, demo_labels):
    _, run = demo_run
    labels, builder = demo_labels, EvidenceBuilder.of(run)
    ok = labels.frame[labels.frame["status"] == "ok"]
    for f, terms in zip(ok["feature"].astype(int), ok["terms"]):
        top = [set(t) for t in builder.pack(f).top["terms"]]
        for t in terms:
            assert np.mean([t in s for s in top]) >= 0.5, (f, t)


def test_a_place_after_a_negated_finding_is_not_negated():
    ph = text_phrases("No free air under the diaphragm. No focal consolidation in the right lung.")
    assert "no air" in ph and "no focal consolidation" in ph
    assert "diaphragm" in ph and "right lung" in ph and "no diaphragm" not in ph and "no right lung" not in ph
