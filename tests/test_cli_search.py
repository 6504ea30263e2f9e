"""``sae search`` output options on the small labeled demo: --top N|all, --output PATH.csv, --mode, notes, clean errors."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from sae.cli import main
from tests.conftest import labeled_copy

QUERY = "axial orientation"


@pytest.fixture(scope="module")
def labeled(labeled_ws_template, tmp_path_factory):
    """A private copy of the trained demo workspace with metadata labels, and its Searcher (searches only read it)."""
    from sae.search.searcher import Searcher

    ws, run = labeled_copy(labeled_ws_template, tmp_path_factory.mktemp("cli-search"))
    return ws, Searcher(run)


def _search(ws, *extra: str) -> int:
    return main(["search", str(ws.path), QUERY, *extra])


def test_output_csv_has_the_columns_and_top_rows(labeled, tmp_path, capsys):
    ws, searcher = labeled
    out = tmp_path / "hits.csv"
    assert _search(ws, "--top", "5", "--output", str(out)) == 0
    printed = capsys.readouterr().out
    assert f"wrote 5 hits to {out}" in printed and "plan (" in printed
    table = pd.read_csv(out, keep_default_na=False)
    res = searcher.search(QUERY, top=5)
    groups = [c.display() for c in res.contributions]
    meta = [c for c in searcher.meta.columns if c != "id"]
    assert groups and list(table.columns) == ["id", "rank", "score", *groups, *meta]
    assert len(table) == 5 and table["id"].tolist() == res.hits["id"].tolist() and table["rank"].tolist() == [1, 2, 3, 4, 5]
    assert table["score"].round(6).tolist() == res.hits["score"].round(6).tolist()
    assert (table[groups].sum(axis=1) - table["score"]).abs().max() < 1e-5  # the group columns explain the score
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hits.csv"]  # written atomically: no temporary left behind

    assert _search(ws, "--top", "2", "--output", str(out)) == 0  # an existing file is replaced
    assert len(pd.read_csv(out)) == 2


def test_top_all_returns_every_ranked_hit(labeled, tmp_path, capsys):
    ws, searcher = labeled
    ranked = searcher.search(QUERY, top=searcher.store.n_rows).hits
    assert 20 < len(ranked) < searcher.store.n_rows  # more than the terminal shows; not every item has the concept
    out = tmp_path / "all.csv"
    assert _search(ws, "--top", "all", "--output", str(out)) == 0
    printed = capsys.readouterr().out
    assert f"showing the first 20 of {len(ranked):,} rows" in printed and f"wrote {len(ranked):,} hits" in printed
    assert pd.read_csv(out)["id"].tolist() == ranked["id"].tolist()
    assert _search(ws, "--top", "ALL") == 0
    assert f"of {len(ranked):,} rows" in capsys.readouterr().out


def test_groups_output(labeled, tmp_path, capsys):
    ws, searcher = labeled
    out = tmp_path / "groups.csv"
    assert _search(ws, "--groups", "max", "--top", "all", "--output", str(out)) == 0
    assert "wrote" in capsys.readouterr().out
    table = pd.read_csv(out)
    assert list(table.columns[:3]) == ["rank", searcher.group_key, "score"]
    assert len(table) == searcher.meta[searcher.group_key].nunique()


@pytest.mark.parametrize("bad", ["0", "-3", "abc", "2.5", "", "nan"])
def test_a_bad_top_is_an_error_line(labeled, bad, capsys):
    ws, _ = labeled
    assert _search(ws, "--top", bad) == 2
    err = capsys.readouterr().err
    assert "error: argument --top:" in err and ">= 1 or 'all'" in err and "Traceback" not in err


def test_a_bad_top_from_the_console_has_no_traceback(labeled):
    ws, _ = labeled
    proc = subprocess.run([sys.executable, "-m", "sae.cli", "search", str(ws.path), QUERY, "--top", "many"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "error: argument --top:" in proc.stderr and "Traceback" not in proc.stderr


def test_output_into_a_missing_folder_or_onto_a_folder_is_an_error_line(labeled, tmp_path, capsys):
    ws, _ = labeled
    missing = tmp_path / "nowhere" / "hits.csv"
    assert _search(ws, "--output", str(missing)) == 2
    captured = capsys.readouterr()
    assert "error: --output" in captured.err and "does not exist" in captured.err and "Traceback" not in captured.err
    assert "plan (" not in captured.out and not missing.parent.exists()  # refused before searching, nothing created
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    for target in (str(folder), str(tmp_path / "new-folder") + "/"):
        assert _search(ws, "--output", target) == 2
        assert "names a folder" in capsys.readouterr().err
    assert [p.name for p in folder.iterdir()] == ["keep.txt"] and not (tmp_path / "new-folder").exists()


def test_plan_and_result_notes_are_printed(labeled, capsys, monkeypatch):
    """Notes of the plan (e.g. a candidate dropped as contradicting the query) and of the result are printed."""
    import dataclasses

    from sae.search.searcher import Searcher

    note = "dropped #12 'superior region' for 'lower brain': contradicts (inferior vs superior)"
    plan_of = Searcher.plan
    monkeypatch.setattr(Searcher, "plan", lambda self, *a, **k: dataclasses.replace(plan_of(self, *a, **k), notes=(note,)))
    ws, _ = labeled
    assert _search(ws, "--top", "2") == 0
    out = capsys.readouterr().out
    assert out.count(note) == 1


def test_a_refused_query_is_an_error_line(labeled, tmp_path, capsys):
    ws, _ = labeled
    out = tmp_path / "hits.csv"
    assert main(["search", str(ws.path), "zzqx vvkw", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "error: " in err and "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("mode", ["hybrid", "dense"])
def test_hybrid_and_dense_modes(labeled, mode, tmp_path, capsys):
    """The demo's image encoder embeds no text: either the mode runs (CSV as for concept mode, with
    ``dense`` in hybrid mode), or it is refused with an ``error:`` line, never a traceback."""
    ws, _ = labeled
    out = tmp_path / f"{mode}.csv"
    rc = _search(ws, "--mode", mode, "--top", "4", "--output", str(out))
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    if rc == 2:
        assert "error: " in captured.err and not out.exists()
        return
    assert rc == 0
    table = pd.read_csv(out)
    assert list(table.columns[:3]) == ["id", "rank", "score"] and len(table) <= 4
    if mode == "hybrid":
        assert "dense" in table.columns


def test_hits_table_keeps_the_prefix_of_a_metadata_column_whose_name_is_taken():
    from sae.cli.search import hits_table
    from sae.search.index import Contribution

    c = Contribution(group=0, feature=3, label="bright rim", negated=False, alternatives=1)
    hits = pd.DataFrame({"rank": [1], "row": [7], "score": [0.5], c.column: [0.5], "dense": [0.2], "id": ["a"],
                         "meta.score": [9.0], "meta.site": ["x"]})
    assert list(hits_table(hits, [c]).columns) == ["id", "rank", "score", "#3 bright rim (+1 OR)", "dense", "meta.score", "site"]


def test_the_cli_offers_the_search_api_modes_and_refuses_groups_with_hybrid(labeled, capsys):
    from sae.cli.search import MODES
    from sae.search import searcher

    assert MODES == searcher.MODES
    ws, _ = labeled
    assert _search(ws, "--groups", "max", "--mode", "hybrid") == 2
    assert "--groups pools the concept plan" in capsys.readouterr().err


def test_mode_is_passed_on_and_the_dense_column_written(labeled, tmp_path, capsys, monkeypatch):
    """Whatever the search API does with ``mode``, the CLI passes it on,
    dense mode sends the query with the filters only (no planner), and a ``dense`` column is written."""
    from sae.search.plan import QueryPlan
    from sae.search.searcher import Searcher

    seen: list = []
    search = Searcher.search

    def with_mode(self, query=None, top=10, like=None, exclude_examples=True, mode="concept"):
        seen.append((mode, query))
        res = search(self, QUERY if mode == "dense" else query, top=top, like=like, exclude_examples=exclude_examples)
        if mode != "concept":
            res.hits["dense"] = 0.5
        return res

    monkeypatch.setattr(Searcher, "search", with_mode)
    ws, _ = labeled
    out = tmp_path / "hybrid.csv"
    assert _search(ws, "--mode", "hybrid", "--top", "3", "--output", str(out)) == 0
    assert seen[-1][0] == "hybrid" and seen[-1][1].concepts
    table = pd.read_csv(out)
    assert len(table) == 3 and "dense" in table.columns and table.columns.get_loc("dense") == 3 + len(seen[-1][1].groups())
    assert main(["search", str(ws.path), "quelque chose", "--mode", "dense", "--top", "2", "--where", "orientation=axial"]) == 0
    mode, plan = seen[-1]
    assert mode == "dense" and isinstance(plan, QueryPlan) and plan.query == "quelque chose" and not plan.concepts
    assert plan.filters == (("orientation", "==", "axial"),)
    assert "dense query-embedding search for 'quelque chose' WHERE orientation == 'axial'" in capsys.readouterr().out
    assert _search(ws, "--top", "1") == 0 and seen[-1][0] == "concept"
