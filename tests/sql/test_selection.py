"""Selection extraction: admits() agrees with evaluating the query's predicate itself.

Oracle: the same predicate evaluated by DuckDB over a grid of (run_id, epoch, step, loss) rows.
Soundness: a (run, epoch) with any selected row is admitted. Exactness: for predicates only on
run_id and epoch, admits() is exactly the predicate.
"""

from __future__ import annotations

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from florql.sql.analysis import analyze
from florql.sql.catalog import Catalog

CATALOG = Catalog(names=frozenset({"loss", "acc"}), loops=("epoch", "step"), runs=("a", "b", "c"))
RUNS = ["a", "b", "c"]
EPOCHS = range(0, 11)


@pytest.fixture(scope="module")
def grid():
    con = duckdb.connect()
    con.execute(
        "CREATE TABLE logs AS SELECT r AS run_id, e AS epoch, s AS step, (e * 10 + s) / 7.0 AS loss "
        "FROM unnest(['a', 'b', 'c']) t(r), range(0, 11) e(e), range(0, 3) s(s)"
    )
    yield con
    con.close()


def selected(grid, predicate: str) -> set[tuple[str, int]]:
    rows = grid.execute(f"SELECT DISTINCT run_id, epoch FROM logs WHERE {predicate}").fetchall()
    return set(rows)


def admitted(query: str) -> set[tuple[str, int]]:
    s = analyze(query, CATALOG).selection
    return {(r, e) for r in RUNS for e in EPOCHS if s.admits(r, {"epoch": e})}


EXACT = [
    "epoch > 5",
    "5 < epoch",
    "epoch >= 5 AND epoch <= 7",
    "epoch BETWEEN 2 AND 4",
    "epoch NOT BETWEEN 2 AND 9",
    "epoch IN (1, 3, 10)",
    "epoch NOT IN (1, 3)",
    "epoch = 3 OR epoch = 9",
    "NOT (epoch > 5)",
    "NOT (epoch > 5 OR run_id = 'a')",
    "run_id = 'b'",
    "run_id <> 'b' AND epoch < 2",
    "run_id IN ('a', 'c') AND (epoch = 0 OR epoch >= 9)",
    "epoch != 4 AND epoch > -1",
]

SOUND_ONLY = [
    "epoch > 5 AND loss > 3",
    "loss > 3 OR epoch = 2",
    "NOT (loss > 3 AND epoch > 2)",
    "step = 1 AND epoch < 3",
    "epoch + 1 > 5",
    "epoch > 5 AND run_id LIKE 'a%'",
    "epoch = (SELECT max(epoch) FROM logs)",
]


@pytest.mark.parametrize("predicate", EXACT)
def test_admits_is_exactly_the_predicate_on_run_and_loop_columns(grid, predicate: str) -> None:
    assert admitted(f"SELECT loss FROM logs WHERE {predicate}") == selected(grid, predicate)


@pytest.mark.parametrize("predicate", EXACT + SOUND_ONLY)
def test_admits_every_selectable_iteration(grid, predicate: str) -> None:
    assert selected(grid, predicate) <= admitted(f"SELECT loss FROM logs WHERE {predicate}")


@pytest.mark.parametrize(
    "template",
    [
        "WITH x AS (SELECT * FROM logs) SELECT loss FROM x WHERE {p}",
        "SELECT loss FROM (SELECT * FROM logs) s WHERE {p}",
        "WITH x AS (SELECT * FROM logs WHERE {p}) SELECT avg(loss) FROM x",
        "SELECT loss FROM logs WHERE {p} UNION ALL SELECT loss FROM logs WHERE {p}",
        "SELECT l.loss FROM logs l JOIN runs r ON l.run_id = r.run_id WHERE {q}",
    ],
)
@pytest.mark.parametrize("predicate", ["epoch > 5", "epoch BETWEEN 2 AND 4 AND run_id = 'a'"])
def test_selection_is_found_through_ctes_subqueries_and_joins(
    grid, template: str, predicate: str
) -> None:
    qualified = predicate.replace("epoch", "l.epoch").replace("run_id", "l.run_id")
    query = template.format(p=predicate, q=qualified)
    assert admitted(query) == selected(grid, predicate)


def test_a_window_above_the_filter_keeps_every_row_it_needs() -> None:
    # lag() over all steps needs the rows the outer WHERE drops: pushing the filter down
    # would under-replay, so the selection must stay whole.
    query = (
        "WITH x AS (SELECT epoch, loss - lag(loss) OVER (ORDER BY epoch) AS d FROM logs) "
        "SELECT * FROM x WHERE epoch > 5"
    )
    assert admitted(query) == {(r, e) for r in RUNS for e in EPOCHS}


def test_a_join_of_two_runs_admits_each_side() -> None:
    query = (
        "SELECT a.loss - b.loss FROM logs a JOIN logs b ON a.epoch = b.epoch "
        "WHERE a.run_id = 'a' AND b.run_id = 'b' AND a.epoch > 8"
    )
    assert admitted(query) == {("a", 9), ("a", 10)} | {("b", e) for e in EPOCHS}


def test_a_query_not_reading_values_selects_nothing() -> None:
    assert admitted("SELECT * FROM runs") == set()


def test_names_come_from_columns_stars_and_record_filters() -> None:
    a = analyze("SELECT l.grad FROM logs l WHERE l.epoch > 1", CATALOG)
    assert (a.names, a.missing) == ({"grad"}, {"grad"})
    a = analyze("SELECT * FROM logs", CATALOG)
    assert a.names == {"loss", "acc"}
    a = analyze("SELECT value FROM records WHERE name IN ('loss', 'gn') AND epoch = 2", CATALOG)
    assert (a.names, a.missing, a.names_in_records) == ({"loss", "gn"}, {"gn"}, {"loss", "gn"})
    a = analyze("SELECT epoch, max(acc) AS m FROM logs GROUP BY epoch ORDER BY m", CATALOG)
    assert a.names == {"acc"}


# --- random predicate trees (Hypothesis) --------------------------------------------------------

_atoms = st.one_of(
    st.builds(lambda op, v: f"epoch {op} {v}", st.sampled_from(["=", "<>", "<", "<=", ">", ">="]),
              st.integers(-1, 12)),
    st.builds(lambda lo, hi: f"epoch BETWEEN {lo} AND {hi}", st.integers(0, 10), st.integers(0, 10)),
    st.builds(lambda vs: f"epoch IN ({', '.join(map(str, vs))})",
              st.lists(st.integers(0, 10), min_size=1, max_size=3)),
    st.builds(lambda r: f"run_id = '{r}'", st.sampled_from(RUNS)),
    st.builds(lambda v: f"loss > {v}", st.integers(0, 15)),
    st.builds(lambda v: f"step = {v}", st.integers(0, 2)),
)  # fmt: skip


def _trees(children):
    return st.one_of(
        st.builds(lambda a, b: f"({a} AND {b})", children, children),
        st.builds(lambda a, b: f"({a} OR {b})", children, children),
        st.builds(lambda a: f"NOT ({a})", children),
    )


@settings(max_examples=150, deadline=None)
@given(st.recursive(_atoms, _trees, max_leaves=6))
def test_random_predicates_never_lose_a_selectable_iteration(grid, predicate: str) -> None:
    exact = "loss" not in predicate and "step" not in predicate
    got = admitted(f"SELECT loss FROM logs WHERE {predicate}")
    want = selected(grid, predicate)
    assert want <= got
    if exact:
        assert got == want
