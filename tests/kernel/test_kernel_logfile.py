"""The log file under trouble: removed, disk full, and the --stats line. Real monitor, real kernel."""

import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
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
    # the conversation's state changes (at least SYN_SENT, SYN_RECV, two ESTABLISHED and two CLOSE) fall in the
    # intervals the lines count
    assert sum(int(re.search(r"; state (\d+), retransmit ", s).group(1)) for s in stats) >= 6, stats


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


# -- a user who can write somewhere on the log's path ------------------------------------------------------------
NOBODY = 65534


def as_nobody(*cmd):
    subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd], check=True,
                   capture_output=True, timeout=30)


@pytest.fixture
def shared_tmp():
    """A directory under /tmp that `nobody` can reach (pytest's own tmp_path is root's, mode 0700)."""
    d = tempfile.mkdtemp(prefix="ss-logpath-", dir="/tmp")
    os.chmod(d, 0o755)
    try:
        yield pathlib.Path(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_a_directory_writable_by_others_higher_on_the_path_is_refused(shared_tmp):
    """.../ww2/sub/x.log, where ww2 is writable by anyone: `nobody` could swap sub for a symlink. Refused at
    start (only sub, the parent, was checked before)."""
    ww2 = shared_tmp / "ww2"
    ww2.mkdir()
    os.chmod(ww2, 0o777)
    (ww2 / "sub").mkdir()
    _refused(_run("--log-file", str(ww2 / "sub" / "x.log")), f"the directory {ww2} on its path")
    assert not (ww2 / "sub" / "x.log").exists()


def test_a_directory_swapped_for_a_symlink_before_a_reopen_is_refused(monitor, shared_tmp):
    """The path was safe at start; then ww2 became writable by anyone and `nobody` swapped sub for a symlink
    to a directory only root can write to. At the reopen (logrotate, SIGHUP) the monitor refuses the path,
    says so once, and writes nothing into root's directory (before: every later line went there)."""
    ww2, private = shared_tmp / "ww2", shared_tmp / "rootonly"
    ww2.mkdir()
    (ww2 / "sub").mkdir()
    private.mkdir(mode=0o700)
    log = ww2 / "sub" / "x.log"
    port = free_port()
    m = monitor("-P", str(port), "--no-report", "--log-file", str(log))
    conversation("127.0.0.1", port, "ss-swap1", "ss-swap1c")
    assert _wait_for(lambda: "ss-swap1" in log.read_text())
    os.chmod(ww2, 0o777)
    as_nobody("mv", str(ww2 / "sub"), str(ww2 / "old"))
    as_nobody("ln", "-s", str(private), str(ww2 / "sub"))
    m.proc.send_signal(signal.SIGHUP)
    time.sleep(1.5)
    conversation("127.0.0.1", port, "ss-swap2", "ss-swap2c")
    assert m.stop() == 0, m.stderr
    assert os.listdir(private) == [], os.listdir(private)
    assert m.stderr.count("cannot write the log file") == 1 and f"the directory {ww2} on its path" in m.stderr, \
        m.stderr
    assert "ss-swap2" in m.stdout and re.search(r"warning: \d+ events could not be written to the log file", m.stderr)


@pytest.mark.parametrize("when", ["start", "reopen"])
def test_a_file_of_another_user_is_refused(monitor, shared_tmp, when):
    """In a sticky directory (as /tmp is), `nobody` pre-creates the log as a 0666 file of its own: it could read,
    truncate and rewrite what the monitor appends. Refused, at start and at a reopen (fs.protected_regular=0
    lets root open it with O_CREAT: the check is ours)."""
    sticky = shared_tmp / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    log = sticky / "x.log"
    if when == "start":
        as_nobody("sh", "-c", f"umask 0; : > {log}")
        _refused(_run("--log-file", str(log)), "belongs to user 65534")
        assert log.read_text() == ""
        return
    port = free_port()
    m = monitor("-P", str(port), "--no-report", "--log-file", str(log))
    conversation("127.0.0.1", port, "ss-own1", "ss-own1c")
    assert _wait_for(lambda: "ss-own1" in log.read_text())
    os.rename(log, str(log) + ".1")
    as_nobody("sh", "-c", f"umask 0; : > {log}")
    m.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    conversation("127.0.0.1", port, "ss-own2", "ss-own2c")
    assert m.stop() == 0, m.stderr
    assert log.read_text() == "" and "ss-own2" in m.stdout
    assert m.stderr.count("cannot write the log file") == 1 and "belongs to user 65534" in m.stderr, m.stderr


def test_a_root_symlink_on_the_path_is_followed(shared_tmp):
    """A symlink root made, in a directory only root can write to (as /var/run -> /run): followed."""
    real = shared_tmp / "real"
    real.mkdir()
    (shared_tmp / "link").symlink_to(real)
    r = _run("--log-file", str(shared_tmp / "link" / "x.log"))
    assert r.returncode == 0, r.stderr
    assert (real / "x.log").is_file()


def test_a_symlink_of_another_user_on_the_path_is_not_followed(shared_tmp):
    """In a sticky directory (/tmp), `nobody` plants a symlink to a directory only root can write to, named
    as the log's directory: not followed (before: the log went into root's directory)."""
    sticky, private = shared_tmp / "sticky", shared_tmp / "rootonly"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    private.mkdir(mode=0o700)
    as_nobody("ln", "-s", str(private), str(sticky / "logs"))
    _refused(_run("--log-file", str(sticky / "logs" / "x.log")), "symbolic link of user 65534")
    assert os.listdir(private) == []
