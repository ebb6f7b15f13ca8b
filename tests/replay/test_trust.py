"""A store is input: ids and paths read from it cannot make replay write or read elsewhere, and
replaying another user's store says that it runs their code (issue 11 item 2)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from florql_storage import Store, kinds

from florql.errors import ReplayError
from florql.replay import hindsight, request, trust
from florql.replay.predicate import parse_where
from florql.replay.splicer import Splice
from florql.session import new_run_id
from tests.replay.conftest import V1, v2

ALL = parse_where(None)


@pytest.mark.parametrize("run_id", [new_run_id(), "r1", "run_2-b", "A" * 64])
def test_ids_florql_makes_are_accepted(run_id: str) -> None:
    assert trust.problem_with_run_id(run_id) is None


@pytest.mark.parametrize(
    "run_id", ["", "..", "../x", "/etc", "a/b", "-rf", "A" * 65, "r1\n", "r 1", 7, None]
)
def test_ids_that_could_name_another_folder_are_refused(run_id: object) -> None:
    assert "is not a florql run id" in (trust.problem_with_run_id(run_id) or "")
    with pytest.raises(ReplayError, match="crafted"):
        trust.check_run_id(run_id)


@pytest.mark.parametrize("rel", ["train.py", "pkg/model.py", "a/b/c.py", "...py"])
def test_relative_normalised_paths_are_accepted(rel: str) -> None:
    assert trust.problem_with_source_path(rel) is None


@pytest.mark.parametrize(
    ("rel", "why"),
    [
        ("../x.py", "leaves the script's folder"),
        ("a/../../x.py", "leaves the script's folder"),
        ("/etc/cron.d/x", "is absolute"),
        ("./x.py", "is not normalised"),
        ("a//x.py", "is not normalised"),
        ("a/", "is not normalised"),
        ("a\\..\\x.py", "backslash"),
        ("x\0.py", "NUL"),
        ("", "is not a file name"),
        (3, "is not a file name"),
    ],
)
def test_paths_outside_or_ambiguous_are_refused(rel: object, why: str) -> None:
    assert why in (trust.problem_with_source_path(rel) or "")


def _job(run_id: str, sources: dict[str, str], script: str = "/x/train.py") -> request.RunJob:
    class History:
        meta = {"script": script}

    History.run_id = run_id  # type: ignore[attr-defined]
    return request.RunJob(History(), Splice(sources=sources), set(), "outer", set())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("run_id", "sources", "script"),
    [
        ("../../escaped", {"train.py": "x = 1"}, "/x/train.py"),
        ("ESCAPE_ABS", {"train.py": "x = 1"}, "/x/train.py"),  # replaced by an absolute id below
        ("r1", {"train.py": "x = 1", "../../escaped/evil.py": "x = 2"}, "/x/train.py"),
        ("r1", {"train.py": "x = 1"}, "/x/.."),
    ],
)
def test_spliced_code_is_never_written_outside_the_private_folder(
    tmp_path: Path, run_id: str, sources: dict[str, str], script: str
) -> None:
    workdir = tmp_path / "a" / "b" / "work"
    workdir.mkdir(parents=True)
    if run_id == "ESCAPE_ABS":
        run_id = str(tmp_path / "escaped")
    with pytest.raises(ReplayError, match="crafted"):
        hindsight._write_sources(str(workdir), run_id, _job(run_id, sources, script))
    assert not (tmp_path / "escaped").exists()
    assert not (tmp_path / "a" / "escaped").exists()


def _crafted_store(tmp_path: Path, runs: dict[str, dict[str, str]]) -> Path:
    """A store whose RUN_BEGIN records name crafted ids and source paths, beside a current
    script that logs a new name (so that a replay would want to run them)."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text(v2(step=False))
    store = tmp_path / "store"
    s = Store.open(str(store))
    w = s.writer()
    for run_id, sources in runs.items():
        meta = {"run_id": run_id, "script": str(project / "train.py"), "cwd": str(project),
                "argv": ["train.py"], "args": {}, "sources": sources}  # fmt: skip
        w.append(kinds.RUN_BEGIN, meta)
        w.append(kinds.VALUE, [run_id, 1, "loss", 1.0, [["epoch", 0, 0]], 0.0, ""])
        w.append(kinds.RUN_END, {"run_id": run_id, "status": "finished", "error": None})
    w.close()
    s.close()
    return project


def test_a_crafted_store_is_not_replayed_and_reads_nothing_outside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "secret.py"
    secret.write_text('florql.log("wnorm", 1)\n')
    _crafted_store(
        tmp_path,
        {
            "../../escaped": {"train.py": V1},
            "r1": {"train.py": V1, "../secret.py": "x = 1\n"},
        },
    )
    store = tmp_path / "store"
    hp = hindsight.plan(str(store), ["wnorm"], ALL)
    assert hp.plan.runs == [] and hp.unresolved == {"wnorm"}
    assert (
        "run '../../escaped' is not replayed: run id '../../escaped' is not a florql run id"
        in hp.warnings[0]
    )
    assert "run 'r1' is not replayed: source path '../secret.py' leaves" in hp.warnings[1]
    report = hindsight.ensure(str(store), ["wnorm"], ALL, progress=False)
    assert report.tasks == 0 and report.unresolved == {"wnorm"}
    assert "is not replayed" in capsys.readouterr().err
    assert not (tmp_path.parent / "escaped").exists()
    # the current text of a crafted path is never read (the secret stays unread: None)
    meta = {"script": str(tmp_path / "project" / "train.py"), "sources": {"../secret.py": ""}}
    assert request.current_sources(meta, None) == {"../secret.py": None}


def test_first_replay_of_another_users_store_says_it_runs_their_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if os.getuid() != 0:
        pytest.skip("making files of another user needs root")
    _crafted_store(tmp_path, {"r1": {"train.py": V1}})
    store = tmp_path / "store"
    seen = str(tmp_path / "cache" / "seen")
    assert not trust.announce_foreign_store(str(store), seen)  # all ours: nothing to say
    os.chown(store / "MANIFEST", 65534, 65534)
    assert trust.foreign_owners(str(store)) == {65534}
    assert trust.announce_foreign_store(str(store), seen)
    err = capsys.readouterr().err
    assert "holds files of another user" in err and "uid 65534" in err
    assert "replay runs the code recorded in it" in err
    assert not trust.announce_foreign_store(str(store), seen)  # once per store
    assert capsys.readouterr().err == ""
