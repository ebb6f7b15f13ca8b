"""`florql ui`'s HTTP side: the token guards every page and API call, queries go through the
same read-only SQL walls as the CLI, bad input is one sentence."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.replay.conftest import env


def test_requests_without_the_token_are_refused(served) -> None:
    status, body = served.get("/api/runs", token="")
    assert status == 403 and b"token" in body
    assert served.get("/api/runs", token="wrong-token")[0] == 403
    assert served.request("/api/hindsight", b'{"name": "x"}', token="")[0] == 403
    status, _ = served.get("/?token=wrong", token="")
    assert status == 403
    assert served.get(f"/?token={served.token}", token="")[0] == 200


def test_the_runs_and_chart_endpoints_answer(served) -> None:
    status, body = served.get("/api/runs?metrics=loss,acc")
    assert status == 200
    runs = json.loads(body)["runs"]
    assert [r["run_id"] for r in runs] == ["r1", "r2"]
    status, body = served.get("/api/chart?name=acc&x=epoch&runs=r2")
    got = json.loads(body)
    assert status == 200 and list(got["runs"]) == ["r2"]
    assert got["runs"]["r2"] == [[1.0, 2.0, 3.0], [0.35, 0.6, 0.85]]


def test_the_sql_box_is_read_only(served) -> None:
    status, body = served.request("/api/sql", b'{"sql": "SELECT count(*) AS n FROM logs"}')
    assert status == 200 and json.loads(body)["rows"] == [[32]]
    for sql in ["COPY runs TO '/tmp/florql-ui-x.csv'", "SELECT * FROM read_csv('/etc/passwd')"]:
        status, body = served.request("/api/sql", json.dumps({"sql": sql}).encode())
        assert status == 400, body
        assert "error" in json.loads(body)
    status, body = served.request("/api/sql", b'{"sql": ""}')
    assert status == 400 and b"empty" in body


def test_a_bad_chart_request_is_one_sentence(served) -> None:
    status, body = served.get("/api/chart?name=loss&width=lots")
    assert status == 400
    assert json.loads(body) == {"error": "width must be a whole number of pixels"}


def test_the_cli_prints_a_tokened_url_on_loopback(ui_store) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "florql", "ui", "--store", ui_store, "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(),
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.startswith("florql ui: open http://127.0.0.1:"), line
        assert "?token=" in line and len(line.split("token=")[1].strip()) >= 30
    finally:
        proc.terminate()
        proc.communicate(timeout=30)  # closes the pipes


def test_ui_on_a_missing_store_is_one_line_and_exit_2(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "florql", "ui", "--store", str(tmp_path / "nope")],
        capture_output=True, text=True, env=env(), timeout=60,
    )  # fmt: skip
    assert done.returncode == 2  # as `florql query` on a missing store
    assert done.stderr.count("\n") == 1 and "no florql store" in done.stderr


def test_a_running_run_updates_its_chart(tmp_path) -> None:
    """Live: the server catches up with the store on each request, and the run reads
    `running` (its writer holds the run's lock), so the page keeps polling it."""
    from tests.sql.storebuild import RunLog, ctx_of, open_store
    from tests.ui.conftest import serve

    store = open_store(str(tmp_path / ".florql"))
    w = store.writer()
    log = RunLog(w, "live")
    for step in range(3):
        log.log(ctx_of(epoch=0, step=step), {"loss": 1.0 / (step + 1)})
    w.flush()
    try:
        for served in serve(tmp_path / ".florql"):
            runs = json.loads(served.get("/api/runs")[1])["runs"]
            assert [(r["run_id"], r["status"]) for r in runs] == [("live", "running")]
            first = json.loads(served.get("/api/chart?name=loss")[1])
            assert first["runs"]["live"][0] == [0, 1, 2]
            for step in range(3, 5):
                log.log(ctx_of(epoch=0, step=step), {"loss": 1.0 / (step + 1)})
            w.flush()
            later = json.loads(served.get("/api/chart?name=loss")[1])
            assert later["runs"]["live"] == [[0, 1, 2, 3, 4], [1.0, 0.5, 1 / 3, 0.25, 0.2]]
    finally:
        log.end()
        w.close()
        store.close()


def test_a_body_that_is_not_json_is_one_sentence(served) -> None:
    status, body = served.request("/api/sql", b"SELECT 1")
    assert status == 400
    assert json.loads(body) == {"error": "the request body must be a JSON object"}


def test_a_port_in_use_is_exit_2_with_one_line(ui_store) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "florql", "ui", "--store", ui_store, "--port", str(port)],
            capture_output=True, text=True, env=env(), timeout=60,
        )  # fmt: skip
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert done.stderr.count("\n") == 1


def test_hindsight_over_the_api_reports_progress_and_refuses_a_second_replay(tmp_path) -> None:
    from tests.replay.conftest import V1, record, v2
    from tests.ui.conftest import serve

    project = tmp_path / "project"
    project.mkdir()
    store = project / ".florql"
    record(project, store, V1)
    (project / "train.py").write_text(v2(epoch=False))  # adds per-step `gnorm`
    for served in serve(store):
        status, body = served.request("/api/explain", b'{"name": "gnorm"}')
        assert status == 200 and "gnorm (not logged yet)" in json.loads(body)["plan"]
        status, body = served.request("/api/hindsight", b'{"name": "gnorm"}')
        assert status == 200, body
        job = json.loads(body)
        again = served.request("/api/hindsight", b'{"name": "gnorm"}')
        if job["state"] == "running":  # a replay already running: the second one is refused
            assert again[0] == 400 and b"already running" in again[1]
        seen = [job["replayed"]]
        while job["state"] == "running":
            job = json.loads(served.get(f"/api/jobs/{job['job_id']}?seen={job['replayed']}")[1])
            seen.append(job["replayed"])
        assert job["state"] == "done", job["message"]
        assert seen == sorted(seen)  # progress only grows
        # 6 epochs x 4 steps of the one run, all stored as replayed values.
        status, body = served.request(
            "/api/sql", b'{"sql": "SELECT count(*) FROM records WHERE name = \'gnorm\'"}'
        )
        assert json.loads(body)["rows"] == [[24]]
        assert seen[-1] == 24
