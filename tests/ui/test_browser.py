"""Every page of `florql ui` in a real headless Chromium: the page loads, its scripts fetch
through the token, charts render with the right number of series and points, the SQL box
answers, and a hindsight request from the page replays and draws. Screenshots of each page
are kept under bench/out/ui/ (printed)."""

from __future__ import annotations

import re
import urllib.parse

import pytest

from tests.replay.conftest import V1, record, v2
from tests.ui.conftest import run_chromium, screenshot, serve


def charts_in(dom: str) -> dict[str, tuple[int, int]]:
    """{chart name: (series, points)} from the DOM the page built."""
    found = re.findall(
        r'<div class="chart" data-name="([^"]*)" data-series="(\d+)" data-points="(\d+)"', dom
    )
    return {name: (int(s), int(p)) for name, s, p in found}


def ready(dom: str, tab: str) -> bool:
    return f'data-ready="{tab}"' in dom


def test_the_runs_page_lists_runs_with_metrics(browser, served) -> None:
    url = f"{served.url}#runs?metrics=loss"
    dom = run_chromium(browser, url)
    assert ready(dom, "runs"), dom[-2000:]
    assert re.search(r'<table id="runs-table" data-rows="2"', dom)
    assert 'data-run="r1"' in dom and 'data-run="r2"' in dom
    assert "best:loss" in dom and "finished" in dom
    screenshot(browser, url, "runs")


def test_the_charts_page_overlays_runs(browser, served) -> None:
    url = f"{served.url}#charts?names=loss,acc&x=global_step"
    dom = run_chromium(browser, url)
    assert ready(dom, "charts"), dom[-2000:]
    # Two runs each: loss has 12 values per run, acc 3 per run (all kept: few points).
    assert charts_in(dom) == {"loss": (2, 24), "acc": (2, 6)}
    assert dom.count("<canvas") >= 2  # uPlot drew
    screenshot(browser, url, "charts")


def test_the_charts_page_compares_selected_runs(browser, served) -> None:
    dom = run_chromium(browser, f"{served.url}#charts?names=loss&x=epoch&runs=r2&log=1")
    assert charts_in(dom) == {"loss": (1, 3)}  # r2 only, its mean loss per epoch


def test_the_sql_box_answers_with_a_table_and_a_chart(browser, served) -> None:
    q = "SELECT epoch, run_id, avg(loss) AS loss FROM logs WHERE loss IS NOT NULL GROUP BY ALL"
    url = f"{served.url}#sql?q={urllib.parse.quote(q)}"
    dom = run_chromium(browser, url)
    assert ready(dom, "sql"), dom[-2000:]
    assert '<table id="sql-table" data-rows="6"' in dom
    assert "6 rows" in dom
    assert charts_in(dom) == {"loss": (2, 6)}  # split by run_id
    screenshot(browser, url, "sql")


def test_a_refused_query_shows_its_sentence(browser, served) -> None:
    q = "COPY runs TO '/tmp/florql-ui-copy.csv'"
    dom = run_chromium(browser, f"{served.url}#sql?q={urllib.parse.quote(q)}")
    assert re.search(r'id="sql-info" class="error">[^<]*read-only', dom), dom[-3000:]


def test_the_page_without_the_token_is_refused(browser, served) -> None:
    dom = run_chromium(browser, f"{served.base}/#runs")
    assert "lacks the server's token" in dom
    assert "runs-table" not in dom


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory):
    """A real recorded run of the replay tests' script; the current script adds `wnorm`."""
    project = tmp_path_factory.mktemp("hindsight")
    store = project / ".florql"
    run_id = record(project, store, V1)
    (project / "train.py").write_text(v2(step=False))
    return project, store, run_id


def test_hindsight_from_the_page_explains_replays_and_draws(browser, recorded) -> None:
    project, store, run_id = recorded
    for served in serve(store):
        url = f"{served.url}#hindsight?name=wnorm&go=1"
        dom = run_chromium(browser, url, budget_ms=600_000, timeout=600)
        assert ready(dom, "hindsight"), dom[-3000:]
        assert 'data-state="done"' in dom, dom[-3000:]
        assert "wnorm (not logged yet)" in dom  # explain's plan was shown first
        # The names the edited script logs and the recorded one did not are offered.
        assert re.search(r'<datalist id="hs-candidates" data-count="2">', dom)
        assert '<option value="running2">' in dom and '<option value="wnorm">' in dom
        assert charts_in(dom) == {"wnorm": (1, 6)}  # one value per epoch of the one run
        screenshot(browser, f"{served.url}#hindsight?name=wnorm&go=1", "hindsight")
        # The replayed values are ordinary data now: the charts page draws them.
        assert charts_in(run_chromium(browser, f"{served.url}#charts?names=wnorm")) == {
            "wnorm": (1, 6)
        }
