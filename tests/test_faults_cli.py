"""Issue 20, the CLI / audit / search half: nothing a user types can delete data, reach outside its
folder, be accepted out of range, rank arbitrary items, or escape as a traceback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from sae.cli import main
from sae.errors import LockedError, SaeError, UnsafeNameError


@pytest.fixture
def labeled(run_ws):
    """The small trained workspace with metadata labels (what search and audit need)."""
    from sae.interpret import MetadataLabeler, label_run

    ws, run = run_ws
    label_run(run, MetadataLabeler(), judge=None, progress=False)
    return ws, run


def _files(folder) -> dict[str, int]:
    """Every file under ``folder`` with its size: equal before and after means nothing was removed."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}


def test_audit_name_never_reaches_outside_the_audits_folder(labeled, tmp_path, capsys):
    ws, run = labeled
    victim = tmp_path / "precious"
    victim.mkdir()
    (victim / "thesis.txt").write_text("years of work")
    (victim / "data.csv").write_text("a,b\n1,2\n")
    store_before, victim_before = _files(ws.store_path), _files(victim)
    for name in (str(victim), "../../../store.zarr"):
        rc = main(["audit", str(ws.path), "--failure", "quality_fail", "--min-slice-size", "5", "--name", name])
        err = capsys.readouterr().err
        assert rc == 2 and "error:" in err and "--name" in err and "plain folder name" in err
    assert _files(victim) == victim_before and _files(ws.store_path) == store_before
    assert not (run.path / "audits").exists()  # refused before anything was written
    from sae.audit.report import audit_run

    with pytest.raises(UnsafeNameError, match="audit name"):
        audit_run(run, failure="quality_fail", name="../../../store.zarr")
    assert _files(ws.store_path) == store_before


def test_run_names_are_plain_folder_names_in_every_command(labeled, capsys):
    ws, _ = labeled
    for argv in (["search", str(ws.path), "axial orientation", "--run", "../../x"],
                 ["audit", str(ws.path), "--failure", "quality_fail", "--run", "/etc"],
                 ["evaluate", str(ws.path), "--run", ".."],
                 ["label", str(ws.path), "--run", "a/b"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "error: --run" in err and "plain folder name" in err


@contextmanager
def _held_elsewhere(target, what: str) -> Iterator[None]:
    """Hold the exclusive lock of ``target`` in another thread (another writer) for the ``with`` block."""
    from sae._lock import exclusive

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with exclusive(target, what):
            held.set()
            release.wait(60)

    t = threading.Thread(target=hold)
    t.start()
    assert held.wait(60)
    try:
        yield
    finally:
        release.set()
        t.join()


def test_audit_reports_are_locked_and_only_replace_reports(labeled, tmp_path):
    from sae.audit import AuditConfig
    from sae.audit.report import audit_run

    _, run = labeled
    report = audit_run(run, failure="quality_fail", config=AuditConfig(min_slice_size=5, queue_size=0), save=False)
    assert report.queue.empty  # queue_size 0: no look-alikes, and no error
    folder = run.path / "audits" / "qc"
    report.save(folder)
    before = _files(folder)
    with _held_elsewhere(folder, "another audit"), pytest.raises(LockedError, match="another audit"):
        report.save(folder)  # a second writer is refused while the first holds the folder
    assert _files(folder) == before
    report.save(folder)  # an earlier report is replaced once the lock is free
    victim = tmp_path / "not-a-report"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    with pytest.raises(SaeError, match="not an audit report"):
        report.save(victim)
    assert (victim / "keep.txt").read_text() == "mine" and _files(victim) == {"keep.txt": 4}


NUMERIC = [
    (["audit", "ws", "--failure", "f", "--alpha", "0"], "--alpha", "between 0 and 1"),
    (["audit", "ws", "--failure", "f", "--alpha", "7"], "--alpha", "between 0 and 1"),
    (["audit", "ws", "--failure", "f", "--min-slice-size", "0"], "--min-slice-size", ">= 1"),
    (["audit", "ws", "--failure", "f", "--queue-size", "-1"], "--queue-size", ">= 0"),
    (["audit", "ws", "--failure", "f", "--threshold", "nan"], "--threshold", "nan or inf"),
    (["search", "ws", "q", "--top", "-5"], "--top", ">= 1"),
    (["search", "ws", "q", "--top", "0"], "--top", ">= 1"),
    (["train", "ws", "--k", "0"], "--k", ">= 1"),
    (["train", "ws", "--n", "-3"], "--n", ">= 1"),
    (["train", "ws", "--epochs", "0"], "--epochs", "> 0"),
    (["train", "ws", "--batch-size", "0"], "--batch-size", ">= 1"),
    (["train", "ws", "--lr", "-1"], "--lr", "> 0"),
    (["train", "ws", "--seed", "-1"], "--seed", ">= 0"),
    (["train", "ws", "--holdout", "1.5"], "--holdout", "[0, 1)"),
    (["train", "ws", "--aux-k", "-1"], "--aux-k", ">= 0"),
    (["train", "ws", "--memory-budget-gb", "0"], "--memory-budget-gb", "> 0"),
    (["train", "ws", "--memory-budget-gb", "-2"], "--memory-budget-gb", "> 0"),
    (["train", "ws", "--workers", "0"], "--workers", ">= 1"),
    (["train", "ws", "--cluster-memory-gb", "-1"], "--cluster-memory-gb", "> 0"),
    (["sweep", "ws", "--ns", "0"], "--ns", ">= 1"),
    (["encode", "ws", "--memory-budget-gb", "0"], "--memory-budget-gb", "> 0"),
    (["figures", "ws", "--dpi", "0"], "--dpi", ">= 1"),
    (["figures", "ws", "--features", "-1"], "--features", ">= 0"),
    (["planted", "ws", "--rows", "0"], "--rows", ">= 1"),
]


@pytest.mark.parametrize(("argv", "option", "rule"), NUMERIC, ids=[" ".join(a[2:]) for a, _, _ in NUMERIC])
def test_numeric_options_are_refused_with_their_range(argv, option, rule, capsys):
    assert main(argv) == 2  # argparse's refusal comes back as a status, not a SystemExit
    err = capsys.readouterr().err
    assert "error:" in err and f"argument {option}:" in err and rule in err


def test_audit_config_refuses_values_out_of_range():
    from sae.audit import AuditConfig

    for bad in ({"alpha": 0}, {"alpha": 7.0}, {"alpha": float("nan")}, {"min_slice_size": 0}, {"queue_size": -1},
                {"holdout_frac": 1.0}, {"min_lift": 0.5}, {"seed": -1}, {"max_k": 0}, {"min_slice_size": 2.5}):
        field = next(iter(bad))
        with pytest.raises(SaeError, match=f"AuditConfig.{field} must be"):
            AuditConfig(**bad)
    assert AuditConfig(queue_size=0).queue_size == 0


def test_plans_without_a_positive_concept_are_refused(labeled, capsys):
    from sae.search.index import ConceptIndex
    from sae.search.plan import QueryPlan

    ws, run = labeled
    index = ConceptIndex.of(run)
    f, g = (int(x) for x in np.argsort(-np.diff(index._ptr))[:2])
    negated_only = QueryPlan("q").add(f).add(g, negated=True).drop(f)
    for plan in (negated_only, QueryPlan("q").add(f).negate(f), QueryPlan("q").add(f).drop(f)):
        with pytest.raises(SaeError, match="no positive concept"):
            index.search(plan)
        with pytest.raises(SaeError, match="no positive concept"):
            index.rank_groups(plan, np.zeros(index.n_rows, np.int64), np.array(["all"], dtype=object))
    assert main(["search", str(ws.path), "without axial orientation"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "no positive concept" in err
    assert main(["search", str(ws.path), "without axial orientation", "--groups", "max"]) == 2
    assert "no positive concept" in capsys.readouterr().err


def test_top_must_be_positive_and_an_empty_answer_says_so(labeled):
    from sae.search.index import ConceptIndex
    from sae.search.plan import QueryPlan

    _, run = labeled
    index = ConceptIndex.of(run)
    f = int(np.argmax(np.diff(index._ptr)))
    for top in (0, -5, 2.5):
        with pytest.raises(SaeError, match="top must be a positive integer"):
            index.search(QueryPlan("q").add(f), top=top)
    allowed = np.ones(index.n_rows, bool)
    allowed[index.active_rows(f)] = False  # no allowed item shows the concept: nothing to rank
    res = index.search(QueryPlan("q").add(f), top=5, allowed=allowed)
    assert res.hits.empty and res.notes == ["no item passing the filters shows any concept of the plan: nothing to rank"]


def test_bad_devices_are_error_lines_not_tracebacks(labeled, capsys):
    import torch

    ws, _ = labeled
    assert main(["train", str(ws.path), "--n", "16", "--k", "4", "--device", "nope", "--name", "t"]) == 2
    assert "error: --device 'nope' is not a torch device" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["train", str(ws.path), "--n", "16", "--k", "4", "--device", "cuda", "--name", "t"]) == 2
        assert "no CUDA device" in capsys.readouterr().err
    assert not (ws.path / "saes" / "t").exists()
