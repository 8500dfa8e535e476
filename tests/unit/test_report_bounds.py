"""`socket-snoop report` on crafted input (issue 19): time and peak memory bounded whatever a file holds.

Each case runs the report in a child of a small wrapper that prints the child's peak RSS (getrusage of its
children) and run time; the child has an address-space limit, so the unbounded code fails with MemoryError
instead of taking the machine's memory. The Python path's (--engine python: where DuckDB is installed the
report takes the fast path, whose bounds test_report_engine.py tests)."""

import gzip
import json
import subprocess
import sys

from socketsnoop.commands import report

MIB = 1 << 20
WRAPPER = """
import json, resource, subprocess, sys, time
limit = int(sys.argv[1])
def cap():
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
t = time.monotonic()
try:
    r = subprocess.run(sys.argv[2:], capture_output=True, text=True, preexec_fn=cap, timeout=120)
    rc, out, err = r.returncode, r.stdout, r.stderr
except subprocess.TimeoutExpired:
    rc, out, err = "timeout", "", ""
print(json.dumps({"rc": rc, "seconds": time.monotonic() - t, "stdout": out, "stderr": err[-2000:],
                  "maxrss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}))
"""
GOOD = ("Dec 30 2024 22:05:25.455 State Change: SRC=10.100.10.150:39134 DST=10.100.10.202:8000 PID=30512 "
        "COMM=audacious STATE=Connection Established\n")


def measured(*args, address_space=1536 * MIB):
    """The report run on args in a child: (its result dict: rc, seconds, stdout, stderr, maxrss in bytes)."""
    r = subprocess.run([sys.executable, "-c", WRAPPER, str(address_space), sys.executable, "-m", "socketsnoop",
                        "report", *args], capture_output=True, text=True, timeout=300)
    return json.loads(r.stdout)


def blank_bomb(tmp_path, cr=True):
    """A .gz of 20 million blank lines (and 1000 of spaces, ending in CR LF unless not cr), one of ours first and
    last."""
    bomb = tmp_path / "bomb.log.gz"
    with gzip.open(bomb, "wb", compresslevel=6) as f:
        f.write(GOOD.encode())
        block = b"\n" * MIB
        for _ in range(20):
            f.write(block)
        f.write((b"  \t \r\n" if cr else b"  \t \n") * 1000 + GOOD.encode())
    return bomb


def padded_logs(tmp_path):
    """(a log of 50 lines padded with spaces past MAX_LINE between two of ours, a .gz of one of ours and a line of
    256 MB of spaces)."""
    pad = GOOD.replace("STATE=", "STATE=" + " " * (report.files.MAX_LINE + 100) + "x")
    log = tmp_path / "padded.log"
    log.write_text(GOOD + pad * 50 + GOOD)
    endless = tmp_path / "endless.log.gz"
    with gzip.open(endless, "wb") as f:
        f.write(GOOD.encode())
        for _ in range(256):
            f.write(b" " * MIB)
    return log, endless


def test_blank_line_bomb_gz(tmp_path):
    """A .gz of 20 MB holding 20 million blank lines (and one of ours at the end): skipped a block at a time,
    counted, in well under a second's work per million (the code that parsed each took minutes)."""
    bomb = blank_bomb(tmp_path)
    assert bomb.stat().st_size < 100_000
    r = measured(str(bomb), "--json", "--engine", "python")
    assert r["rc"] == 0, r
    assert r["seconds"] < 5, r["seconds"]
    assert r["maxrss"] < 100 * MIB, r["maxrss"]
    d = json.loads(r["stdout"])
    assert d["events"] == 2 and d["malformed"] == 0 and d["blank_lines"] == 20 * MIB + 1000
    r = measured(str(bomb), "--engine", "python")
    assert f"; 0 malformed lines skipped; {20 * MIB + 1000} blank lines" in r["stdout"], r["stdout"][:500]


def test_long_padded_lines_are_cut_and_counted(tmp_path):
    """Lines padded with spaces past MAX_LINE (the pattern's worst case), and a .gz whose one line is 256 MB of
    spaces: cut as they are read, counted and shown, in bounded time and memory."""
    log, endless = padded_logs(tmp_path)
    r = measured(str(log), str(endless), "--json", "--engine", "python")
    assert r["rc"] == 0, r
    d = json.loads(r["stdout"])
    assert d["events"] == 3 and d["malformed"] == 51 and d["lines_too_long"] == 51
    assert r["seconds"] < 20 and r["maxrss"] < 100 * MIB, r
    text = measured(str(log), str(endless), "--engine", "python")["stdout"]
    assert f"51 malformed lines skipped (51 over {report.files.MAX_LINE} bytes)" in text


def test_long_names_are_cut(tmp_path):
    """2,000 lines over 10 syslog hosts whose COMM is 16,000 emoji (64 KB, escaped 256 KB): the tables keep
    names cut to 64 bytes, and say so (the code before kept each whole: over a gigabyte)."""
    emoji = "\U0001f600" * 16_000
    with open(tmp_path / "emoji.log", "w") as f:
        for i in range(2000):
            f.write(f"Dec  1 21:05:58 host{i % 10} socket-snoop[1]: "
                    + GOOD.replace("PID=30512 COMM=audacious", f"PID={i} COMM={i}{emoji}")
                    .replace("SRC=10.100.10.150:39134", f"SRC=10.100.10.150:{1024 + i}"))
    r = measured(str(tmp_path / "emoji.log"), "--json", "--engine", "python")
    assert r["rc"] == 0, r["stderr"]
    assert r["maxrss"] < 150 * MIB, r["maxrss"]
    d = json.loads(r["stdout"])
    assert d["names_cut"] == 2000 and sum(h["events"] for h in d["hosts"]) == 2000
    comm = d["hosts"][0]["processes"][0]["comm"]
    assert comm.endswith("\\...") and len(comm) < 300


def test_memory_bounded_in_bytes_across_hosts(tmp_path):
    """120,000 lines over 10 hosts, each with a new process, user, unit, pod, remote and connection, names of
    260 characters: every table of every host draws on one byte budget, so the peak stays under 200 MB, and
    what the tables left out is counted and said (the code before grew by the key, per host: gigabytes)."""
    name = "n" * 260
    with open(tmp_path / "many.log", "w") as f:
        for i in range(120_000):
            f.write(f"Dec  1 21:05:58 host{i % 10} socket-snoop[1]: Dec 01 2024 21:05:58.{i % 1000:03d} State Change: "
                    f"SRC=192.0.2.1:{1024 + i % 60000} DST=10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:443 PID={i} "
                    f"COMM=p{i} STATE=Connection Established USER=u{name}{i} UNIT={name}{i}.service "
                    f"POD={name}{i}\n")
    r = measured(str(tmp_path / "many.log"), "--top", "3", "--engine", "python")
    assert r["rc"] == 0, r["stderr"]
    assert r["maxrss"] < 180 * MIB, r["maxrss"]  # 137 MiB; 195 with the budgets before (112 and 72 MiB)
    out = r["stdout"]
    assert "Hosts: 10 (host0, " in out
    assert "all tables together 56.0 MiB)" in out and "events not counted in Processes" in out
    assert "; 240000 names cut" in out  # the user and the unit of each line
