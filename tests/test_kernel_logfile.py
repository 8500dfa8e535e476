"""The log file under trouble: removed, disk full, and the --stats line. Real monitor, real kernel."""

import os
import time

import pytest

from helpers import conversation, free_port, sh

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
        assert "Totals: " in m.stdout
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
