"""The console as a person at a terminal meets it: the real monitor under `script` (util-linux: its standard
output a pseudo-terminal), real traffic (a connect refused by a closed port, a reset by SO_LINGER 0). Colour on
the reset and failure lines of a terminal (and its warnings), none with NO_COLOR or --color never, none in the log
file or a pipe;
--format compact in columns (IPv4 lines within 120) on the console while the log file keeps the text lines."""

import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

from support.net import free_port
from support.system import READY, uniq

pytestmark = pytest.mark.bpf

SGR = re.compile(r"\x1b\[[0-9;]*m")
COMPACT = re.compile(r"^\d{2}:\d{2}:\d{2}\.\d{3} +\d+ \S+ +\S+:\d+ +\S+:\d+ +\S")

TRAFFIC = r"""
import ctypes, socket, struct, sys, time
ctypes.CDLL(None).prctl(15, b"ss-colour-cli", 0, 0, 0)
port, closed = int(sys.argv[1]), int(sys.argv[2])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(8)
c = socket.create_connection(("127.0.0.1", port))
a, _ = srv.accept()
c.sendall(b"x" * 20000); a.recv(65536); a.sendall(b"ok"); c.recv(10); c.close(); a.close()
try:
    socket.create_connection(("127.0.0.1", closed), timeout=5)
    sys.exit("the closed port accepted")
except ConnectionRefusedError:
    pass
c = socket.create_connection(("127.0.0.1", port))
a, _ = srv.accept()
c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
c.close()
time.sleep(0.2)
a.close()
"""


def traffic(port, closed):
    subprocess.run([sys.executable, "-c", TRAFFIC, str(port), str(closed)], check=True, timeout=60)


def on_terminal(tmp_path, *args, env=None, log_name="term.log"):
    """The monitor under `script -qfec` (its stdout and stderr a pseudo-terminal), the traffic once it is ready:
    (what the terminal showed, without its carriage returns; the log file's lines)."""
    port, closed = free_port(), free_port()
    log = tmp_path / log_name
    cmd = shlex.join([sys.executable, "-m", "socketsnoop", "--log-file", str(log), "-P", str(port), "-P", str(closed),
                      *args])
    proc = subprocess.Popen(["script", "-qfec", cmd, "/dev/null"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=dict(os.environ, **(env or {})), start_new_session=True)
    seen = b""
    try:
        os.set_blocking(proc.stdout.fileno(), False)
        deadline = time.monotonic() + 30
        while READY.encode() not in seen:
            assert time.monotonic() < deadline and proc.poll() is None, seen.decode(errors="replace")
            seen += proc.stdout.read() or b""
            time.sleep(0.05)
        traffic(port, closed)
        time.sleep(1.0)
        proc.stdin.write(b"\x03")  # Ctrl-C typed at the terminal
        proc.stdin.flush()
        os.set_blocking(proc.stdout.fileno(), True)
        seen += proc.stdout.read()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = seen.decode().replace("\r\n", "\n")
    assert "Totals: " in text, text  # stopped by Ctrl-C, its exit summary shown
    return text, log.read_text().splitlines()


def event_lines(text, pattern):
    return [line for line in text.splitlines() if pattern.match(SGR.sub("", line))]


def coloured(line):
    """The line's colour code, if it is wrapped whole in one of ours ('' if it has none)."""
    m = re.fullmatch(r"(\x1b\[[0-9;]*m)([^\x1b]*)\x1b\[0m", line)
    assert m or "\x1b" not in line, f"a colour code inside a line: {line!r}"
    return m.group(1) if m else ""


def test_compact_and_colour_on_a_terminal(tmp_path):
    # a unit not there yet: a warning on stderr (the terminal too), coloured whole
    shown, log = on_terminal(tmp_path, "--format", "compact", "--exclude-unit", f"{uniq('ss-later')}.service",
                             env={"NO_COLOR": ""})
    warning = next(line for line in shown.splitlines() if "socket-snoop: warning:" in line)
    assert coloured(warning) == "\x1b[1;35m", shown
    lines = event_lines(shown, COMPACT)
    header = next(line for line in shown.splitlines() if line.startswith("TIME "))
    assert header.split()[:6] == ["TIME", "PID", "COMM", "LOCAL", "REMOTE", "EVENT"]
    assert len(lines) >= 20, shown
    colours = {SGR.sub("", line): coloured(line) for line in lines}
    refused = [line for line in colours if " refused " in line]
    resets = [line for line in colours if "RESET-" in line or " reset-" in line]
    assert len(refused) == 1 and len(resets) >= 4, shown
    assert all(colours[line] == "\x1b[1;31m" for line in refused)
    assert all(colours[line] == "\x1b[33m" for line in resets)
    assert not any(colours[line] for line in colours if line not in refused + resets), shown
    assert any(re.search(r" closed +out +\S+ms 20K/2$", line) for line in colours), shown
    assert max(map(len, colours)) <= 120
    # the log file: the seed's text lines, no colour, no header
    assert log and all(re.match(r"^[A-Z][a-z]{2} \d{2} \d{4} [\d:.]{12} [A-Z][a-z]+( [A-Z][a-z]+)?: SRC=", x)
                       for x in log), log
    assert "\x1b" not in "".join(log)
    assert sum("Connection Summary" in x for x in log) == sum(" DIR" not in x and re.search(r" (in|out) ", x)
                                                                is not None for x in colours)


def test_text_on_a_terminal_is_the_log_files_lines_coloured(tmp_path):
    """The default text format at a terminal: the very lines of the log file, the resets' and the failure's
    coloured whole."""
    shown, log = on_terminal(tmp_path, "--no-summary")
    lines = [line for line in shown.splitlines() if " SRC=" in line]
    assert [SGR.sub("", line) for line in lines] == log
    for line in lines:
        plain = SGR.sub("", line)
        assert coloured(line) == ("\x1b[33m" if " Reset " in plain else ""), line


@pytest.mark.parametrize("args, env", [(["--format", "compact"], {"NO_COLOR": "1"}),
                                       (["--format", "compact", "--color", "never"], {}),
                                       (["--color", "never"], {})])
def test_no_colour_when_asked(tmp_path, args, env):
    shown, log = on_terminal(tmp_path, *args, "--exclude-unit", f"{uniq('ss-later')}.service", env=env)
    assert "Reset" in "".join(log) and "RESULT=refused" in "".join(log) and "socket-snoop: warning:" in shown
    assert "\x1b" not in shown, shown


def test_no_colour_and_no_header_in_a_pipe(monitor):
    """stdout a pipe (a script reading it): compact lines without header or colour; the log file text."""
    port, closed = free_port(), free_port()
    m = monitor("-P", str(port), "-P", str(closed), "--format", "compact", summary=True)
    traffic(port, closed)
    assert m.stop() == 0
    out = m.stdout.splitlines()
    assert out and all(COMPACT.match(line) for line in out) and "\x1b" not in m.stdout, m.stdout
    assert any(" refused " in line for line in out), m.stdout
    assert len(out) == len(m.lines()) and all(" SRC=" in x for x in m.lines()), (m.stdout, m.lines(), m.stderr)
