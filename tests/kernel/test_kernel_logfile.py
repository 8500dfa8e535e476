"""The log file under trouble: removed, disk full, and the --stats line. Real monitor, real kernel."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from support.net import free_port
from support.procs import conversation
from support.system import sh

pytestmark = pytest.mark.bpf


def test_removed_log_file_is_reported_once_and_recreated(monitor):
    port = free_port()
    m = monitor("-P", str(port), "--no-report")
    conversation("127.0.0.1", port, "ss-lf1", "ss-lf1c")
    time.sleep(0.5)
    os.unlink(m.log)
    time.sleep(1.5)  # the monitor looks about once a second
    conversation("127.0.0.1", port, "ss-lf2", "ss-lf2c")
    assert m.stop() == 0
    assert m.stderr.count("was removed") == 1, m.stderr
    lines = m.lines()
    assert lines and all("ss-lf2" in line for line in lines)
    assert oct(os.stat(m.log).st_mode & 0o777) == "0o640"


def test_full_disk_is_reported_once_and_console_goes_on(monitor, tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt))
    try:
        port = free_port()
        log = mnt / "snoop.log"
        m = monitor("-P", str(port), "--no-report", "--log-file", str(log))
        with open(mnt / "filler", "wb") as f:  # fill the disk
            try:
                f.write(b"\0" * (1 << 20))
            except OSError:
                pass
        for i in range(3):
            conversation("127.0.0.1", port, f"ss-full{i}", "ss-fullc")
        assert m.stop() == 0
        assert m.stderr.count("cannot write the log file") == 1, m.stderr
        assert "ss-full2" in m.stdout  # the console kept every line
        assert "Totals: " in m.stderr
    finally:
        sh("umount", "-l", str(mnt), check=False)


def test_stats_line(monitor):
    port = free_port()
    m = monitor("-P", str(port), "--no-report", "--stats", "0.5", "-q")
    conversation("127.0.0.1", port, "ss-stats", "ss-statsc")
    time.sleep(1.2)
    m.stop()
    stats = [line for line in m.stderr.splitlines() if line.startswith("stats: ")]
    assert stats, m.stderr
    assert "events/s" in stats[0] and "lost so far 0" in stats[-1]
    assert any("state 1" in s or "state " in s for s in stats)


# -- a log path someone else could plant something at ------------------------------------------------------
def _run(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "socketsnoop", "--no-report", "--duration", "0.5", *args],
                          capture_output=True, text=True, timeout=timeout)


def _refused(r, why):
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert "refusing the log file" in r.stderr and why in r.stderr, r.stderr


def test_symlink_or_fifo_at_start_is_refused(tmp_path):
    target = tmp_path / "target"
    target.write_text("precious\n")
    link = tmp_path / "x.log"
    link.symlink_to(target)
    _refused(_run("--log-file", str(link)), "symbolic link")
    assert target.read_text() == "precious\n"
    fifo = tmp_path / "f.log"
    os.mkfifo(fifo)
    _refused(_run("--log-file", str(fifo)), "not a regular file")  # no reader: would have blocked
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # with a reader, it opens: still refused
    try:
        _refused(_run("--log-file", str(fifo)), "not a regular file")
    finally:
        os.close(reader)


def test_directory_writable_by_others_is_refused_unless_sticky_and_roots(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    _refused(_run("--log-file", str(shared / "x.log")), "writable by anyone")
    assert not (shared / "x.log").exists()
    os.chmod(shared, 0o775)
    os.chown(shared, 0, 100)  # group "users"
    _refused(_run("--log-file", str(shared / "x.log")), "writable by group 100")
    os.chmod(shared, 0o1777)  # sticky and root's, like /tmp: fine
    r = _run("--log-file", str(shared / "x.log"))
    assert r.returncode == 0, r.stderr
    assert (shared / "x.log").is_file()


@pytest.mark.parametrize("plant", ["symlink", "fifo"])
@pytest.mark.parametrize("how", ["SIGHUP", "check"])
def test_planted_after_rotation_is_not_followed(monitor, tmp_path, plant, how):
    """logrotate renamed the log; before the monitor reopens it, someone plants a symlink (to a file root
    may write) or a FIFO at the path: the monitor refuses it, says so once, keeps running."""
    target = tmp_path / "target"
    target.write_text("precious\n")
    port = free_port()
    m = monitor("-P", str(port), "--no-report")
    conversation("127.0.0.1", port, "ss-rot1", "ss-rot1c")
    assert _wait_for(lambda: len(m.lines()) >= 10)
    os.rename(m.log, str(m.log) + ".1")
    reader = None
    if plant == "symlink":
        m.log.symlink_to(target)
    else:
        os.mkfifo(m.log)
        reader = os.open(m.log, os.O_RDONLY | os.O_NONBLOCK)  # a reader waiting: a FIFO that would open
    try:
        if how == "SIGHUP":
            m.proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)  # the once-a-second check sees the new inode
        for i in range(2):
            conversation("127.0.0.1", port, f"ss-rot{i + 2}", "ss-rotc")
        time.sleep(0.5)
        assert m.proc.poll() is None, "the monitor stopped"
        assert m.stop() == 0, m.stderr
        if reader is not None:
            try:
                assert os.read(reader, 1 << 16) == b""
            except BlockingIOError:  # nothing written into it
                pass
    finally:
        if reader is not None:
            os.close(reader)
    assert target.read_text() == "precious\n"
    why = "symbolic link" if plant == "symlink" else "not a regular file"
    assert m.stderr.count("cannot write the log file") == 1 and why in m.stderr, m.stderr
    assert "ss-rot3" in m.stdout  # the console went on
    assert re.search(r"warning: \d+ events could not be written to the log file", m.stderr), m.stderr


def _wait_for(pred, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False
