"""Files written safely and a full disk (issue 16, findings 8 and 10a), as a user (root) meets them.

- An export or report target that another user replaced by a symlink is replaced by a regular file; what the
  link pointed to is untouched. Output files, the SQLite store and its -wal/-shm are 0600 (whatever the umask).
- A disk that fills during a scan ends the run `interrupted` with "disk full: …", one line on stderr, exit 3,
  no temporary file left. A report into a full folder fails the same way and leaves the earlier report intact.

The full disk is a real tmpfs mounted by the test (tests run as root in CI); without permission to mount, those
tests skip and say why.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from scanner.fileio import disk_full_reason, parse_file_mode, write_private
from scanner.store.db import open_store
from tests.helpers import make_workspace, system, write_yaml
from tests.report.history import build_history

SECRET = b"root-owned secret\n"


def hcscan(*args: str, cwd: Path, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scanner", *args], cwd=cwd, capture_output=True, text=True, timeout=300, umask=umask
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _is_regular(path: Path) -> bool:
    return stat.S_ISREG(os.lstat(path).st_mode)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*.tmp"))


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim" / "shadow"
    victim.parent.mkdir()
    victim.write_bytes(SECRET)
    victim.chmod(0o600)
    return victim


def _history_workspace(root: Path, **config: object) -> Path:
    """A workspace whose store (hcscan.db beside config.yaml) holds three weekly runs of findings."""
    make_workspace(root, [system("epj", "127.0.0.1", 443)], extra_config=dict(config))
    engine = open_store(f"sqlite:///{root / 'hcscan.db'}")
    try:
        build_history(engine)
    finally:
        engine.dispose()
    return root / "config.yaml"


# -- one function writes every output file -------------------------------------------------------------------


def test_write_private_replaces_a_planted_symlink_and_never_writes_through_it(tmp_path: Path) -> None:
    victim = _victim(tmp_path)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    target = shared / "x.json"
    target.symlink_to(victim)
    old = os.umask(0)
    try:
        write_private(target, b'{"ok": true}\n')
    finally:
        os.umask(old)
    assert victim.read_bytes() == SECRET and _mode(victim) == 0o600
    assert _is_regular(target) and _mode(target) == 0o600 and target.read_bytes() == b'{"ok": true}\n'
    assert _leftovers(shared) == []


def test_write_private_into_a_directory_target_fails_and_leaves_nothing(tmp_path: Path) -> None:
    (tmp_path / "out.json").mkdir()
    with pytest.raises(IsADirectoryError):
        write_private(tmp_path / "out.json", b"x")
    assert _leftovers(tmp_path) == []


def test_file_modes_accepted_and_refused() -> None:
    assert [parse_file_mode(m) for m in ("0600", "640", "0o644")] == [0o600, 0o640, 0o644]
    for bad in ("0666", "0700", "0400", "4600", "rw-------", "", "0777"):
        with pytest.raises(ValueError, match=r"mode|octal"):
            parse_file_mode(bad)


def test_disk_full_is_recognised_from_a_file_write_and_from_sqlite() -> None:
    assert disk_full_reason(OSError(28, "No space left on device", "/x/y")) == (
        "disk full: No space left on device (/x/y)"
    )
    assert disk_full_reason(OSError(13, "Permission denied")) is None
    assert disk_full_reason(RuntimeError("database or disk is full")) is None  # only the real error codes


# -- exports and reports through the CLI ----------------------------------------------------------------------


def test_export_does_not_follow_a_symlink_planted_at_its_target(tmp_path: Path) -> None:
    _history_workspace(tmp_path)
    victim = _victim(tmp_path)
    shared = tmp_path / "shared" / "0777"
    shared.mkdir(parents=True, mode=0o777)
    for fmt, name in (("json", "x.json"), ("csv", "x.csv"), ("sarif", "x.sarif"), ("junit", "x.xml")):
        target = shared / name
        target.symlink_to(victim)
        result = hcscan("export", "--format", fmt, "--out", str(target), cwd=tmp_path, umask=0)
        assert result.returncode == 0, result.stderr
        assert victim.read_bytes() == SECRET and _mode(victim) == 0o600
        assert _is_regular(target) and _mode(target) == 0o600, fmt
        assert "epj" in target.read_text(encoding="utf-8")  # the findings, not an empty file
    assert _leftovers(shared) == []


def test_report_does_not_follow_symlinks_planted_at_its_pages(tmp_path: Path) -> None:
    _history_workspace(tmp_path)
    victim = _victim(tmp_path)
    reports = tmp_path / "reports"
    reports.mkdir(mode=0o777)
    for name in ("region-r1.html", "index.html"):
        (reports / name).symlink_to(victim)
    result = hcscan("report", "--config", "config.yaml", cwd=tmp_path, umask=0)
    assert result.returncode == 0, result.stderr
    assert victim.read_bytes() == SECRET
    for name in ("region-r1.html", "index.html"):
        page = reports / name
        assert _is_regular(page) and _mode(page) == 0o600 and "<html" in page.read_text(encoding="utf-8")
    assert _leftovers(reports) == []


def test_report_file_mode_from_config_and_a_wrong_one_refused(tmp_path: Path) -> None:
    _history_workspace(tmp_path, report={"out_dir": "web/reports", "file_mode": "0640"})
    result = hcscan("report", "--config", "config.yaml", cwd=tmp_path, umask=0o077)
    assert result.returncode == 0, result.stderr
    assert _mode(tmp_path / "web" / "reports" / "index.html") == 0o640
    assert _mode(tmp_path / "web") == 0o750  # created for a group that may read the pages

    for bad, why in (("0666", "only the owner may write"), (640, "write the mode in quotes")):
        config = tmp_path / "config.yaml"
        write_yaml(config, {**_config_dict(config), "report": {"out_dir": "reports", "file_mode": bad}})
        refused = hcscan("report", "--config", "config.yaml", cwd=tmp_path)
        assert refused.returncode == 2, refused.stderr
        assert "config.yaml:" in refused.stderr and why in refused.stderr


def _config_dict(path: Path) -> dict[str, object]:
    from scanner.yamlio import load_yaml

    data = load_yaml(path).data
    assert isinstance(data, dict)
    return dict(data)


# -- the store -----------------------------------------------------------------------------------------------


def test_a_new_store_and_its_wal_and_shm_are_0600_whatever_the_umask(tmp_path: Path) -> None:
    db = tmp_path / "new" / "hcscan.db"
    old = os.umask(0)
    try:
        engine = open_store(f"sqlite:///{db}")
        with engine.begin() as connection:  # hold a connection so -wal and -shm exist while we look
            connection.execute(text("SELECT count(*) FROM scan_run"))
            modes = {p.name: _mode(p) for p in db.parent.iterdir()}
        engine.dispose()
    finally:
        os.umask(old)
    assert modes == {"hcscan.db": 0o600, "hcscan.db-wal": 0o600, "hcscan.db-shm": 0o600}
    assert _mode(db.parent) == 0o700


def test_an_existing_store_keeps_its_mode(tmp_path: Path) -> None:
    db = tmp_path / "hcscan.db"
    open_store(f"sqlite:///{db}").dispose()
    db.chmod(0o640)  # the site chose group-readable: hcscan neither loosens nor changes it
    open_store(f"sqlite:///{db}").dispose()
    assert _mode(db) == 0o640


# -- a full disk -----------------------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for this test (root only); skipped, saying why, where mounting is not permitted."""
    where = tmp_path / "small"
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(where)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(directory: Path) -> Path:
    """Write a filler file until the file system says there is no space left; return it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    block = b"\0" * 65536
    try:
        while True:
            try:
                os.write(fd, block)
            except OSError as exc:
                if exc.errno != 28:
                    raise
                if len(block) == 1:
                    break
                block = block[: len(block) // 16 or 1]
    finally:
        os.close(fd)
    return filler


class FillOnConnect:
    """A TCP server on 127.0.0.1 that closes every connection at once; while armed, the first connection to arrive
    first fills `directory` to the last byte — so the disk fills while a scan is probing, after its run started."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.armed = False
        self.filled = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> FillOnConnect:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.armed and not self.filled.is_set():
                fill(self.directory)
                self.filled.set()
            conn.close()


def test_disk_full_mid_scan_ends_the_run_interrupted_exit_3_one_line(small_disk: Path, tmp_path: Path) -> None:
    with FillOnConnect(small_disk) as server:
        systems = [system(f"s{i:02d}", "127.0.0.1", server.port, "https") for i in range(60)]
        make_workspace(tmp_path, systems, extra_config={"store_url": f"sqlite:///{small_disk / 'hcscan.db'}"})
        # A first, small run records the catalogue and inventory; the second starts with only its run row.
        first = hcscan("scan", "--config", "config.yaml", "--control", "TLS-07", "--system", "s00", cwd=tmp_path)
        assert first.returncode == 1, first.stderr  # could not assess: the server closes at once
        server.armed = True
        result = hcscan("scan", "--config", "config.yaml", "--control", "TLS-07", cwd=tmp_path)
        assert server.filled.is_set()
    assert result.returncode == 3, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: disk full: "), result.stderr
    assert "Traceback" not in result.stderr and "run #2 ended interrupted" in lines[0]
    assert _leftovers(small_disk) == []
    (small_disk / "filler").unlink()
    engine = open_store(f"sqlite:///{small_disk / 'hcscan.db'}")
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT id, status, status_detail FROM scan_run ORDER BY id")).all()
            stored = connection.execute(text("SELECT count(*) FROM finding WHERE run_id = 2")).scalar_one()
    finally:
        engine.dispose()
    assert [(r[0], r[1]) for r in rows] == [(1, "complete"), (2, "interrupted")]
    assert rows[1][2].startswith("disk full: ") and stored == 0


def test_report_into_a_full_folder_fails_clearly_and_keeps_the_earlier_report(small_disk: Path, tmp_path: Path) -> None:
    _history_workspace(tmp_path, report={"out_dir": str(small_disk / "reports")})
    first = hcscan("report", "--config", "config.yaml", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    reports = small_disk / "reports"
    before = {p.name: p.read_bytes() for p in reports.iterdir()}
    assert set(before) == {"region-r1.html", "index.html"}
    fill(small_disk)
    result = hcscan("report", "--config", "config.yaml", cwd=tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"error: cannot write {reports / 'region-r1.html'}: disk full: No space left")
    assert {p.name: p.read_bytes() for p in reports.iterdir()} == before  # earlier report intact, no .tmp


def test_a_scan_on_an_already_full_disk_exits_3_in_one_line_and_starts_no_run(small_disk: Path, tmp_path: Path) -> None:
    with FillOnConnect(small_disk) as server:
        make_workspace(
            tmp_path,
            [system("s00", "127.0.0.1", server.port, "https")],
            extra_config={"store_url": f"sqlite:///{small_disk / 'hcscan.db'}"},
        )
        open_store(f"sqlite:///{small_disk / 'hcscan.db'}").dispose()  # an existing, current store
        fill(small_disk)
        result = hcscan("scan", "--config", "config.yaml", "--control", "TLS-07", cwd=tmp_path)
    assert result.returncode == 3, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "disk full: " in lines[0] and "Traceback" not in result.stderr, result.stderr
    (small_disk / "filler").unlink()
    engine = open_store(f"sqlite:///{small_disk / 'hcscan.db'}")
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM scan_run")).scalar_one() == 0
    finally:
        engine.dispose()
    assert _leftovers(small_disk) == []


def test_agent_report_job_into_a_full_folder_fails_its_slot_in_one_line(small_disk: Path, tmp_path: Path) -> None:
    from tests.agent.conftest import AgentProcess, agent_workspace, query

    config = agent_workspace(
        tmp_path,
        1,  # no scan job here: the port is never probed
        [{"id": "nightly-report", "kind": "report", "cron": "0 0 * * *"}],
        agent={"catchup_grace_s": 2 * 86400},
    )
    data = _config_dict(config)
    write_yaml(config, {**data, "report": {"out_dir": str(small_disk / "reports")}})
    fill(small_disk)
    agent = AgentProcess(config, "--once")
    try:
        assert agent.wait(120) == 1
    finally:
        agent.stop()
    (slot,) = query(f"sqlite:///{tmp_path / 'hcscan.db'}", "select state, detail from job_slot")
    assert slot[0] == "failed" and "index.html: disk full: No space left on device" in slot[1], slot
    log = agent.log_path.read_text()
    assert "Traceback" not in log and '"job.incomplete"' in log, log
    assert _leftovers(small_disk) == []
