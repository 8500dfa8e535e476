"""The report's compiled reader of log lines (commands/report/linescan.c) against the Python reader, entry by
entry: every line it takes must be one the Python reader takes, with the same fields (Loader._row of the
Python reader's entry); every other line must come back for the Python reader, in order, with its text. The
lines: the monitor's own formatters' (text, --context, JSON with and without the owner's names, behind a
central rsyslog's prefix), the hostile ones of test_report_engine.py, and many mutations of them (a byte
changed, left out, doubled; a word cut), which is where a grammar wider than the reader's would show."""

import ctypes
import os
import random
import shutil
import subprocess
import time

import pytest
from socketsnoop.commands.report import engine, engine_load, engine_scan
from socketsnoop.commands.report.aggregate import ByHost
from socketsnoop.commands.report.bounds import Names
from socketsnoop.commands.report.engine_cols import NAMES
from socketsnoop.commands.report.files import LineCounts
from socketsnoop.commands.report.parse import Malformed, Parser
from support.reportlogs import write_log
from test_report_engine import HOSTILE

pytestmark = [pytest.mark.skipif(not engine.available(), reason="duckdb is not installed"),
              pytest.mark.skipif(engine_scan.library() is None, reason="the compiled reader is not built")]

ALPHABET = [*"0123456789abcdefxX:.[]->=\\ _(){}\",u", "\t", "\r", "\f", "é", "\x00", "\x1b", "SRC=", " USER=", "ms",
            ">", "\\u00", "\\\\x", "null", ',"uid":1', ',"user":"u"']


def mutations(lines, count, seed):
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        line = rng.choice(lines)
        i = rng.randrange(len(line) + 1)
        how = rng.randrange(5)
        if how == 0:
            line = line[:i] + rng.choice(ALPHABET) + line[i + 1:]
        elif how == 1:
            line = line[:i] + line[i + 1:]
        elif how == 2:
            line = line[:i] + rng.choice(ALPHABET) + line[i:]
        elif how == 3:
            j = rng.randrange(i, len(line) + 1)
            line = line[:j] + line[i:j] + line[j:]
        else:
            line = line[:i]
        out.append(line)
    return out


def entries_of(tmp_path, path, reader):
    """A reader's rows of one file, before the IPv6 addresses' check: {n: (what, row values by NAMES, rest)}
    (DuckDB's: the lines it takes, and those it leaves to the Python reader, what 0)."""
    con = engine.connect(str(tmp_path))
    try:
        engine_load.Loader(con, str(tmp_path), Parser(), LineCounts(), ByHost(lambda: None, LineCounts(), Names()),
                           Names())
        if reader == "compiled":
            engine_scan.read(engine_scan.library(), con, path, 0)
        else:
            os.symlink(path, tmp_path / "link")
            for query in engine_load.load_queries(engine_load.source(tmp_path / "link", False), 0):
                con.execute(query)
        # (not sorted: DuckDB 2.0.1 has given a sorted result of 0 rows without an error within its memory limit)
        rows = con.execute(f"SELECT {', '.join(NAMES)}, what, rest FROM entries WHERE what >= 0").fetchall()
    finally:
        con.close()
    return {r[0]: (r[-2], r[:-2], r[-1]) for r in rows}


@pytest.mark.parametrize("reader", ["compiled", "duckdb"])
def test_every_line_taken_is_the_python_readers(tmp_path, monkeypatch, reader):
    """Both fast readers: the compiled one, and DuckDB's patterns (engine_sql.py), which must be no wider."""
    monkeypatch.setenv("TZ", "UTC")  # a text line's time: the reader's local time, the compiled reader's as written
    time.tzset()
    src = tmp_path / "formatters.log"
    lines = []
    for i, kw in enumerate(({}, {"context": True}, {"context": True, "hosts": 3}, {"form": "json"},
                            {"form": "json", "context": True}, {"form": "json", "context": True, "hosts": 2})):
        write_log(src, 1_500, seed=11 + i, **kw)
        lines += src.read_text().splitlines()
    formatted = len(lines)
    lines += HOSTILE.splitlines()
    lines += mutations(lines, 40_000, seed=5)
    if reader == "duckdb":  # DuckDB's reader ends a line at a CR, cuts it at a NUL: such a file is the Python
        lines = [line for line in lines if "\r" not in line and "\0" not in line]  # path's (Loader.read)
    path = tmp_path / "mixed.log"
    path.write_bytes("\n".join(lines).encode() + b"\n")
    got = entries_of(tmp_path, str(path), reader)
    parser, names = Parser(), Names()
    loader = engine_load.Loader.__new__(engine_load.Loader)
    loader.names, loader.warns, loader.drops = names, [], []
    taken = handed = taken_formatted = 0
    for number, text in enumerate(path.read_bytes().split(b"\n")[:-1], 1):
        text = text.decode("utf-8", "replace")
        n = 2 * number
        if not text.strip(" \t\r\f\v"):
            assert n not in got, text  # blank: counted, not an entry
            continue
        assert n in got, (number, text)
        what, row, rest = got[n]
        if what == 0:  # for the Python reader, with its text
            assert rest == text
            handed += 1
            continue
        fam, src, dst = (row[NAMES.index(c)] for c in ("fam", "src", "dst"))
        if fam == 6:
            assert rest == text  # the addresses' form is checked after the load (Loader._canonical)
            if not (engine_load._canonical6(src) and engine_load._canonical6(dst)):
                continue  # then the line goes to the Python reader
        taken += 1
        taken_formatted += number <= formatted
        try:
            expected = loader._row(n, parser.parse(text))
        except Malformed:
            pytest.fail(f"taken, but malformed to the Python reader: {text!r}")
        loc = NAMES.index("loc")  # (text times are local: the reader's converted, the table's later; JSON's UTC)
        assert expected is not None and row[loc] == ('{"timestamp"' not in text) and \
            row[:loc] + row[loc + 1:] == tuple(expected[:loc] + expected[loc + 1:len(row)]), (text, row, expected)
    # the formatters' lines all taken; of the mutations, thousands taken and thousands handed back
    assert taken_formatted == formatted and taken - formatted > 4_000 and handed > 10_000, (taken, handed)


def test_blocks_and_long_lines(tmp_path):
    """Lines across the blocks read (engine_scan.BLOCK), lines over MAX_LINE (dropped as they come, counted
    too long, blank ones too) and a last line without a newline: counted as files.py counts them."""
    src = tmp_path / "a.log"
    write_log(src, 4_000, seed=3)
    good = src.read_text().splitlines(keepends=True)
    parts = good[:1000] + ["x" * (3 * engine_scan.BLOCK) + "\n", " " * (2 * engine_scan.BLOCK) + "\n"] + \
        good[1000:2000] + ["y" * 70_000 + "\n", "\t" * 70_000 + "\n"] + good[2000:] + ["z" * 100]
    path = tmp_path / "b.log"
    path.write_text("".join(parts))
    con = engine.connect(str(tmp_path))
    try:
        con.execute(f"CREATE TABLE entries ({engine_load.ENTRY_COLUMNS}, what TINYINT, rest VARCHAR)")
        scan = engine_scan.read(engine_scan.library(), con, str(path), 0)
        (taken,), (other,) = (con.execute(f"SELECT count(*) FROM entries WHERE what = {w}").fetchone() for w in (1, 0))
        last = con.execute("SELECT max(n) FROM entries").fetchone()[0]
    finally:
        con.close()
    assert (scan.blank, scan.too_long, scan.first_long) == (0, 4, 1001)
    assert taken == len(good) and other == 1 and last == 2 * len(parts)


def test_a_damaged_gz_takes_the_python_path(tmp_path):
    """A read error in the middle of the stream (a .gz cut short) is raised again out of DuckDB's INSERT, and the
    report takes the Python path, which says where the file ends."""
    src = tmp_path / "a.log.gz"
    write_log(src, 20_000, gz=True, seed=4)
    data = src.read_bytes()
    cut = tmp_path / "cut.log.gz"
    cut.write_bytes(data[:len(data) // 2])
    con = engine.connect(str(tmp_path))
    try:
        con.execute(f"CREATE TABLE entries ({engine_load.ENTRY_COLUMNS}, what TINYINT, rest VARCHAR)")
        with pytest.raises(EOFError):
            engine_scan.read(engine_scan.library(), con, str(cut), 0)
    finally:
        con.close()


def test_an_array_is_bounded_in_bytes(tmp_path, monkeypatch):
    """Lines for the Python reader can be 64 KiB each: an array DuckDB is given holds ROWS entries or BYTES of
    text, whichever comes first, not ROWS lines of 64 KiB (1 GiB)."""
    path = tmp_path / "long.log"
    path.write_text(("junk " * 12_000 + "\n") * 100)  # 100 lines of 60,000 bytes, none of ours
    monkeypatch.setattr(engine_scan, "BYTES", 2 << 20)
    lib, held = engine_scan.library(), []
    get_next = engine_scan.Scan._get_next

    def measured(self, stream, out):
        rc = get_next(self, stream, out)
        held.append(ctypes.c_int64.from_address(out).value)  # the array's length: its rows
        return rc

    monkeypatch.setattr(engine_scan.Scan, "_get_next", measured)
    con = engine.connect(str(tmp_path))
    try:
        con.execute(f"CREATE TABLE entries ({engine_load.ENTRY_COLUMNS}, what TINYINT, rest VARCHAR)")
        engine_scan.read(lib, con, str(path), 0)
        assert con.execute("SELECT count(*), max(strlen(rest)) FROM entries WHERE what = 0").fetchone() == (100, 60_000)
    finally:
        con.close()
    # 2 MiB is 34 lines; a block read past it adds at most 9 more: never the 100 at once
    assert max(held) <= 34 + 9 and sum(held) == 100, held


@pytest.mark.parametrize("reader", ["compiled", "duckdb"])
def test_syslog_priorities_taken(tmp_path, reader):
    """A central file's prefix with a priority of three digits and a day of two (`<134>Dec 11 ...`, local0.info)
    is a prefix, though its 12th and 15th bytes are where a text line's time has a space and a colon."""
    src = tmp_path / "a.log"
    lines = []
    for form in ("text", "json"):
        write_log(src, 200, form=form, seed=9)
        lines += [f"<134>Dec 11 21:05:58 h1 socket-snoop[7]: {line}" for line in src.read_text().splitlines()]
    path = tmp_path / "pri.log"
    path.write_text("\n".join(lines) + "\n")
    got = entries_of(tmp_path, str(path), reader)
    assert [what for what, _, _ in got.values()] == [1] * len(lines)
    assert {row[NAMES.index("host")] for _, row, _ in got.values()} == {"h1"}


def test_said_when_not_built(tmp_path, monkeypatch, capsys):
    """Without the compiled reader (no C compiler where the package was installed) the fast path still runs, and
    says once on stderr why it is slower; SOCKETSNOOP_REPORT_NO_SCAN=1, a choice, is not said."""
    from socketsnoop.cli import main
    log = tmp_path / "a.log"
    write_log(log, 50, seed=2)
    monkeypatch.setattr(engine_scan, "_path", lambda: None)
    monkeypatch.setattr(engine_scan, "_lib", None)
    monkeypatch.delenv("SOCKETSNOOP_REPORT_NO_SCAN", raising=False)
    assert main(["report", "--no-lifecycles", str(log)]) in (0, None)
    err = capsys.readouterr().err
    assert err.count("the compiled reader was not built") == 1, err
    monkeypatch.setenv("SOCKETSNOOP_REPORT_NO_SCAN", "1")
    assert main(["report", "--no-lifecycles", str(log)]) in (0, None)
    assert "not built" not in capsys.readouterr().err


def test_memory_safe_on_mutated_lines(tmp_path):
    """linescan_fuzz.c: the compiled reader on 200,000 mutated lines, each in a buffer of its exact size, and on
    blocks of them cut anywhere, built with AddressSanitizer and UBSan (a read past a line, an overflow or a
    leak aborts it); every export checked and released. Skipped where gcc cannot build with the sanitizers."""
    here = os.path.dirname(os.path.abspath(__file__))
    src = os.path.join(os.path.dirname(os.path.abspath(engine_scan.__file__)))
    if not os.path.exists(os.path.join(src, "linescan.c")):  # the installed package has no source: the tree's
        src = os.path.join(here, "..", "..", "src", "socketsnoop", "commands", "report")
    binary = tmp_path / "fuzz"
    if shutil.which("gcc") is None:
        pytest.skip("no gcc here")
    built = subprocess.run(["gcc", "-O1", "-g", "-std=gnu11", "-fsanitize=address,undefined",
                            "-fno-sanitize-recover=undefined", "-I", src, "-o", str(binary),
                            os.path.join(here, "linescan_fuzz.c")], capture_output=True, text=True)
    if built.returncode != 0 and ("asan" in built.stderr or "ubsan" in built.stderr):
        pytest.skip(f"gcc cannot build with the sanitizers here: {built.stderr.strip()[-200:]}")
    assert built.returncode == 0, built.stderr
    (tmp_path / "words").write_bytes(engine_scan._words())
    seeds, lines = tmp_path / "seeds", []
    for i, kw in enumerate(({}, {"context": True, "hosts": 2}, {"form": "json", "context": True},
                            {"form": "json", "hosts": 2})):
        write_log(tmp_path / "a.log", 500, seed=21 + i, **kw)
        lines += (tmp_path / "a.log").read_text().splitlines()
    seeds.write_text("\n".join(lines + HOSTILE.splitlines()) + "\n")
    r = subprocess.run([str(binary), str(tmp_path / "words"), str(seeds), "200000", "7"], capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1"))
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert "iterations" in r.stdout
