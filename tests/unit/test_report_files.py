"""`socket-snoop report`'s files: pipes and FIFOs read once (by the Python path), a damaged .gz's lines before
the damage counted and its message naming the last of them, and a file given twice read once."""

import gzip
import io
import json
import os
import random
import subprocess
import sys
import threading
import zlib

import pytest

from socketsnoop.commands import report

EVENT = ("Dec 30 2024 22:05:{s:02d}.000 State Change: SRC=10.0.0.1:{port} DST=10.0.0.2:80 PID=7 COMM=curl "
         "STATE=Connection Established\n")


def log(n, first=0):
    return "".join(EVENT.format(s=(first + i) % 60, port=40000 + first + i) for i in range(n))


def report_cmd(*args, **kw):
    """report in a child (a hang fails by its timeout instead of holding the tests)."""
    kw.setdefault("timeout", 60)
    return subprocess.run([sys.executable, "-m", "socketsnoop", "report", "--json", "--no-lifecycles", *args],
                          capture_output=True, text=True, **kw)


def run(argv):
    out = io.StringIO()
    status = report.run(report.build_parser().parse_args(argv), out)
    return status, out.getvalue()


def events(r):
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["events"]


class Writer(threading.Thread):
    """Writes data to a FIFO (opening it waits for its reader), then closes it."""

    def __init__(self, path, data):
        super().__init__(daemon=True)
        self.path, self.data = path, data

    def run(self):
        try:
            with open(self.path, "wb") as f:
                f.write(self.data)
        except BrokenPipeError:
            pass

    def release(self):
        """A writer the report never read from: its open or write ended, not left waiting."""
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self.join(10)
        os.close(fd)


@pytest.mark.parametrize("engine", ["auto", "python"])
def test_a_fifo_is_read_once(tmp_path, engine):
    """A FIFO was opened three times (the check, the head for the order, the read): its data went to the
    check, and the head's open waited for a writer that had gone. Now it is opened once and read, after the
    regular files; the same with --engine auto, which leaves the fast path to the regular files."""
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    plain = tmp_path / "a.log"
    plain.write_text(log(2, first=30))
    for args, want in (([fifo], 5), ([fifo, str(plain)], 7), ([str(plain), fifo], 7)):
        w = Writer(fifo, log(5).encode())
        w.start()
        try:
            r = report_cmd("--engine", engine, *args, timeout=30)
        finally:
            w.release()
        assert events(r) == want
    w = Writer(fifo, gzip.compress(log(4).encode()))  # gzip through a FIFO too
    w.start()
    try:
        assert events(report_cmd("--engine", engine, fifo, timeout=30)) == 4
    finally:
        w.release()


def test_a_pipe_by_its_dev_fd_name(tmp_path):
    """`report <(cat x.log)`: a pipe named /dev/fd/N, read once (it read nothing: its head went to the order);
    with the fast path asked, one line and status 2; not followed."""
    plain = tmp_path / "a.log"
    plain.write_text(log(2, first=30))

    def with_pipe(*args, data=log(3).encode()):
        r, w = os.pipe()
        os.write(w, data)  # within the pipe's buffer
        os.close(w)
        try:
            return report_cmd(*[a.replace("PIPE", f"/dev/fd/{r}") for a in args], pass_fds=(r,))
        finally:
            os.close(r)

    assert events(with_pipe("PIPE")) == 3
    assert events(with_pipe("--engine", "python", "PIPE", str(plain))) == 5
    assert events(with_pipe(str(plain), "PIPE", str(plain))) == 5
    r = with_pipe("--engine", "duckdb", "PIPE")
    if "duckdb is not installed" not in r.stderr:
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr.endswith(" is not a regular file (a pipe, FIFO or device): it needs the Python path\n")
        assert len(r.stderr.splitlines()) == 1 and "/dev/fd/" in r.stderr
    r = with_pipe(str(plain), "PIPE", "--follow")
    assert r.returncode == 2 and "--follow: the newest file must be a plain file (not '-', a pipe or .gz)" in r.stderr


@pytest.mark.parametrize("engine", ["auto", "python"])
def test_a_truncated_gz_names_the_last_line_read(tmp_path, engine, capsys):
    """A .gz cut short: the lines before the cut counted, and the message names the last of them (it said
    'after line 0': the block being read, 256 KiB, was dropped with its error)."""
    rng = random.Random(5)
    text = "".join(EVENT.format(s=rng.randrange(60), port=rng.randrange(1024, 65536)) for _ in range(3000))
    data = gzip.compress(text.encode())
    cut = data[:len(data) * 2 // 3]
    whole = zlib.decompressobj(31).decompress(cut).count(b"\n")  # the whole lines before the cut
    assert 1000 < whole < 3000
    path = tmp_path / "t.log.1.gz"
    path.write_bytes(cut)
    status, out = run(["--engine", engine, "--no-lifecycles", "--json", str(path)])
    assert status == 1
    assert json.loads(out)["events"] == whole
    err = capsys.readouterr().err
    assert (f"socket-snoop report: {path}: unreadable after line {whole}: Compressed file ended before the "
            "end-of-stream marker was reached\n") in err


@pytest.mark.parametrize("engine", ["auto", "python"])
def test_a_file_given_twice_is_read_once(tmp_path, engine, capsys, monkeypatch):
    """The same file (device and inode) under the same name, another name or a link: read once, said once."""
    a = tmp_path / "a.log"
    a.write_text(log(3))
    (tmp_path / "link.log").symlink_to(a)
    b = tmp_path / "b.log"
    b.write_text(log(2, first=10))
    args = ["--engine", engine, "--no-lifecycles", "--json"]
    status, out = run([*args, str(a), str(a)])
    assert status == 0 and json.loads(out)["events"] == 3
    assert capsys.readouterr().err.splitlines()[-1:] == [f"socket-snoop report: {a}: given twice, read once"]
    monkeypatch.chdir(tmp_path)
    status, out = run([*args, str(a), "b.log", "link.log", "./a.log", str(b)])
    assert status == 0 and json.loads(out)["events"] == 5
    err = capsys.readouterr().err
    assert f"socket-snoop report: {a}: given 3 times (also as link.log, ./a.log), read once\n" in err
    assert "socket-snoop report: b.log: given twice (also as " + str(b) + "), read once\n" in err
    assert err.count("read once") == 2


def test_standard_input_given_twice_is_read_once():
    r = report_cmd("-", "/dev/stdin", input=log(3))
    assert events(r) == 3
    assert r.stderr == "socket-snoop report: (standard input): given twice (also as /dev/stdin), read once\n"
