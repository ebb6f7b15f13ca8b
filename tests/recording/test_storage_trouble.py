"""Storage trouble never ends the training and loses nothing acknowledged (florql/flusher.py,
invariants 1-6): a full disk, a failing fsync, a checkpoint that cannot be written, a florql
bug in the flusher."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
import textwrap

import pytest
import torch
from florql_storage import Store, kinds
from florql_storage.fs import RealFS

import florql
from florql import checkpointer, flusher, session
from florql.record_command import run_rows
from florql.sql.connection import Connection
from tests.recording.recutil import child_env


class _FullAppend:
    def __init__(self, fs: DiskFullFS, path: str, inner) -> None:
        self._fs, self._path, self._inner = fs, path, inner

    def write(self, data) -> int:
        if self._fs.refuses(self._path):
            view = memoryview(data).cast("B")
            self._inner.write(view[: len(view) // 2])  # a torn write, as a full disk leaves
            raise OSError(errno.ENOSPC, "No space left on device", self._path)
        return self._inner.write(data)

    def fsync(self) -> None:
        if self._fs.fsync_fails:
            raise OSError(errno.EIO, "Input/output error", self._path)
        self._inner.fsync()

    def size(self) -> int:
        return self._inner.size()

    def close(self) -> None:
        self._inner.close()


class DiskFullFS(RealFS):
    """Real files whose writes fail with ENOSPC while `full` (only page files while
    `pages_full`); fsyncs fail with EIO while `fsync_fails`."""

    def __init__(self) -> None:
        self.full = False
        self.pages_full = False
        self.fsync_fails = False

    def refuses(self, path: str) -> bool:
        return self.full or (self.pages_full and "/pages/" in path)

    def open_append(self, path: str, *, truncate: bool = False):
        return _FullAppend(self, path, super().open_append(path, truncate=truncate))

    def write_file(self, path: str, data) -> None:
        if self.refuses(path):
            raise OSError(errno.ENOSPC, "No space left on device", path)
        super().write_file(path, data)

    def fsync(self, path: str) -> None:
        if self.fsync_fails:
            raise OSError(errno.EIO, "Input/output error", path)
        super().fsync(path)


@pytest.fixture()
def disk(tmp_path, monkeypatch):
    """A session on a DiskFullFS store: yields (fs, session, store path)."""
    monkeypatch.setenv("FLORQL_CKPT_EVERY", "1")
    monkeypatch.setattr(checkpointer, "RETRY_FIRST", 0.0)  # retry a checkpoint at once
    script = tmp_path / "train.py"
    script.write_text("# placeholder\n")
    fs = DiskFullFS()
    s = session.Session(str(tmp_path / "st"), script=str(script), argv=["train.py"], fs=fs)
    s.start()
    session.install(s)
    yield fs, s, str(tmp_path / "st")
    s.end()
    session.install(None)


def stored(path: str, run_id: str) -> tuple[list, object]:
    st = Store.open(path, create=False)
    try:
        values = [r.body for r in st.scan(kinds=[kinds.VALUE], run_id=run_id)]
        return values, st.runs()[run_id]
    finally:
        st.close()


def test_values_logged_while_the_disk_is_full_are_kept_and_written_once_it_has_room(disk, capsys):
    """Invariants 1-3."""
    fs, s, path = disk
    for i in range(5):
        florql.log("x", i)
    assert s.drain()
    fs.full = True
    for i in range(5, 10):
        assert florql.log("x", i) == i  # the training never sees the trouble
    assert not s.drain() and not s.drain()  # refused, kept, retried
    assert s.flusher.troubled and len(s.flusher.pending) == 5
    fs.full = False
    assert s.drain() and not s.flusher.troubled
    stats = s.end()
    values, run = stored(path, s.run_id)
    assert [v[3] for v in values] == list(range(10))  # each exactly once, in order
    assert run.status == "finished" and stats["values"] == 10
    assert run.end["stats"]["degraded"] is True
    assert "No space left on device" in run.end["stats"]["degraded_reason"]
    err = capsys.readouterr().err
    assert (
        err.count("refuses writes") == 1 and err.count("note: the store accepts writes again") == 1
    )
    assert "Traceback" not in err
    # ... and `runs` says so, in the SQL view and in `florql runs`
    con = Connection(path, replay=False)
    try:
        assert con.sql("SELECT degraded FROM runs").fetchall() == [(True,)]
    finally:
        con.close()
    st = Store.open(path, create=False)
    try:
        assert [row["degraded"] for row in run_rows(st)] == ["yes"]
    finally:
        st.close()


def test_a_frame_written_whole_before_its_fsync_failed_is_not_written_twice(disk):
    """Invariant 5: the retry learns what reached the log."""
    fs, s, path = disk
    florql.log("x", 0)
    assert s.drain()
    fs.fsync_fails = True
    for i in range(1, 4):
        florql.log("x", i)
    assert not s.drain()  # the frame is in the file, its fsync failed
    fs.fsync_fails = False
    florql.log("x", 4)
    assert s.drain()
    s.end()
    values, _ = stored(path, s.run_id)
    assert [v[3] for v in values] == [0, 1, 2, 3, 4]
    assert len({v[1] for v in values}) == 5


def test_while_the_store_refuses_writes_at_most_the_buffer_is_kept_and_drops_are_counted(
    tmp_path, monkeypatch, capsys
):
    """Invariant 4."""
    monkeypatch.setenv("FLORQL_BUFFER_RECORDS", "5")
    fs = DiskFullFS()
    script = tmp_path / "train.py"
    script.write_text("\n")
    s = session.Session(str(tmp_path / "st"), script=str(script), argv=["train.py"], fs=fs)
    s.start()
    session.install(s)
    try:
        fs.full = True
        for i in range(3):
            florql.log("x", i)
        assert not s.drain()
        for i in range(3, 13):
            florql.log("x", i)
        assert not s.drain()
        assert s.flusher.values_dropped == 8  # room for 2 more of the 10
        fs.full = False
        stats = s.end()
    finally:
        session.install(None)
    values, run = stored(str(tmp_path / "st"), s.run_id)
    assert [v[3] for v in values] == [0, 1, 2, 3, 4]
    assert stats["values"] == 5 and run.end["stats"]["values_dropped"] == 8
    assert capsys.readouterr().err.count("are dropped") == 1


def test_checkpoints_are_skipped_while_the_disk_is_full_and_training_goes_on(disk):
    fs, s, path = disk
    model = torch.nn.Linear(4, 4)
    florql.checkpointing(model=model)
    for epoch in florql.loop("epoch", range(4)):
        if epoch == 1:
            fs.full = True
            florql.log("x", epoch)
            assert not s.drain()  # the flusher finds out
        if epoch == 2:
            fs.full = False
            assert s.drain()  # the flusher finds out
        for _ in florql.loop("step", range(2)):
            florql.log("loss", float(epoch))
        s.checkpointer.close()  # let this epoch's checkpoint finish before the disk changes
    stats = s.end()
    st = Store.open(path, create=False)
    try:
        epochs = [c.meta["ctx"][0][1] for c in st.checkpoints(s.run_id)]
    finally:
        st.close()
    assert epochs == [0, 2, 3] and stats["checkpoints_skipped"] == 1
    assert stats["degraded"] and stats["values"] == 9


def test_a_checkpoint_write_that_fails_is_skipped_and_the_next_one_is_written(disk, capsys):
    fs, s, path = disk
    model = torch.nn.Linear(4, 4)
    florql.checkpointing(model=model)
    for epoch in florql.loop("epoch", range(3)):
        fs.pages_full = epoch == 1
        with torch.no_grad():
            model.weight += 1  # new pages each epoch (unchanged ones are not written again)
        for _ in florql.loop("step", range(2)):
            florql.log("loss", float(epoch))
        s.checkpointer.close()
    stats = s.end()
    _, run = stored(path, s.run_id)
    st = Store.open(path, create=False)
    try:
        epochs = [c.meta["ctx"][0][1] for c in st.checkpoints(s.run_id)]
    finally:
        st.close()
    assert epochs == [0, 2] and stats["checkpoints_failed"] == 1
    assert run.status == "finished" and run.end["stats"]["degraded"]
    assert "a checkpoint write failed (No space left on device)" in stats["degraded_reason"]
    assert capsys.readouterr().err.count("could not be written") == 1


def test_a_florql_bug_in_the_flusher_ends_the_run_failed_loudly_and_training_goes_on(
    disk, monkeypatch, capsys
):
    """Invariant 6."""
    fs, s, path = disk
    florql.log("x", 0)
    assert s.drain()

    def broken(entries, atomic=False):
        raise RuntimeError("boom")

    monkeypatch.setattr(s.writer, "append_many", broken)
    florql.log("x", 1)
    assert not s.drain() and not s.drain()
    assert florql.log("x", 2) == 2  # passes through, records nothing
    for e in florql.loop("epoch", range(2)):
        florql.log("y", e)
    stats = s.end()
    values, run = stored(path, s.run_id)
    assert [v[3] for v in values] == [0]
    assert run.status == "failed" and "RuntimeError: boom" in run.end["error"]
    assert stats["values"] == 1
    err = capsys.readouterr().err
    assert err.count("florql: error: recording stopped by a florql error: RuntimeError: boom") == 1


def test_storage_trouble_classification():
    from florql.errors import StoreError

    wrapped = StoreError("could not write")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert flusher.storage_trouble(wrapped) and flusher.reason_of(wrapped) == (
        "No space left on device"
    )
    assert not flusher.storage_trouble(TypeError("x"))


def _limit_file_size() -> None:
    # A file-size limit makes writes past it fail with EFBIG, as a full disk would.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE semantics")
def test_plain_python_training_survives_checkpoints_the_disk_cannot_hold(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            """
            import torch, florql
            model = torch.nn.Linear(300, 300)
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            florql.checkpointing(model=model, optimizer=opt)
            for epoch in florql.loop("epoch", range(3)):
                for step in florql.loop("step", range(4)):
                    loss = model(torch.ones(1, 300)).sum()
                    opt.zero_grad(); loss.backward(); opt.step()
                    florql.log("loss", loss.item())
            print("training done")
            """
        )
    )
    r = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limit_file_size,
    )
    assert r.returncode == 0 and r.stdout == "training done\n", r.stderr
    assert "Traceback" not in r.stderr and "could not be written (File too large)" in r.stderr
    st = Store.open(str(tmp_path / ".florql"), create=False)
    try:
        (run,) = st.runs().values()
        values = list(st.scan(kinds=[kinds.VALUE]))
    finally:
        st.close()
    assert run.status == "finished" and run.end["stats"]["degraded"]
    assert len(values) == 12 and run.end["stats"]["values"] == 12
    assert os.path.isdir(tmp_path / ".florql")


def test_a_run_begin_written_whole_before_its_fsync_failed_is_not_written_twice(disk):
    """Invariant 5, for the run's first record."""
    fs, s, path = disk
    fs.fsync_fails = True
    florql.log("x", 0)
    assert not s.drain()  # RUN_BEGIN and the value are in the file, their fsync failed
    fs.fsync_fails = False
    assert s.drain()
    s.end()
    st = Store.open(path, create=False)
    try:
        begins = [r for r in st.scan(kinds=[kinds.RUN_BEGIN])]
        values = [r.body[3] for r in st.scan(kinds=[kinds.VALUE])]
        status = st.runs()[s.run_id].status
    finally:
        st.close()
    assert len(begins) == 1 and values == [0] and status == "finished"
