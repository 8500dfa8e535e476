"""The fast path's patterns (commands/report/engine_sql.py) restate the log format in RE2: a line they do not take
goes to the Python reader, and the report stays the same, so a format that drifted from them would only make the
fast path slower, unseen by the tests that compare the two paths' reports. Here the lines the monitor's own
formatters write (text, --context, JSON with the owner's names, behind a central rsyslog's prefix, gzipped) must
all be taken by the patterns: none handed to the Python reader."""

import pytest
from socketsnoop.cli import main
from socketsnoop.commands.report import engine, engine_load
from support.readers import reader  # noqa: F401 (a fixture)
from support.reportlogs import write_log

FORMS = {"text": {}, "context_gz": {"context": True, "gz": True}, "json": {"form": "json", "context": True},
         "central_text": {"context": True, "hosts": 3}, "central_json_gz": {"form": "json", "context": True,
                                                                           "hosts": 2, "gz": True}}


@pytest.mark.skipif(not engine.available(), reason="duckdb is not installed")
@pytest.mark.parametrize("name", FORMS)
def test_the_patterns_take_every_line_the_formatters_write(tmp_path, monkeypatch, capsys, name, reader):
    path = tmp_path / (name + (".log.gz" if FORMS[name].get("gz") else ".log"))
    write_log(path, 3_000, seed=7, **FORMS[name])
    handed = []
    parse = engine_load.Loader._parse

    def counted(self, n, text, *args, **kw):
        handed.append(text)
        return parse(self, n, text, *args, **kw)

    monkeypatch.setattr(engine_load.Loader, "_parse", counted)
    assert main(["report", "--engine", "duckdb", "--no-lifecycles", "--json", str(path)]) in (0, None)
    out = capsys.readouterr().out
    assert '"events":' in out and handed == [], handed[:3]


@pytest.mark.skipif(not engine.available(), reason="duckdb is not installed")
def test_an_empty_json_comm_as_the_python_path(tmp_path, monkeypatch, capsys):
    """"comm":"" is no process with pid 0 (a reset that answers no socket), an empty name with another pid: the
    fast path takes both and counts them as the Python path does (the processes' table names them apart)."""
    path = tmp_path / "empty.log"
    write_log(path, 2_000, seed=8, form="json", context=True)
    lines = path.read_text().splitlines(keepends=True)
    empty = []
    for i, line in enumerate(lines):
        if '"pid":0,' not in line and i % 7 == 0:
            head, rest = line.split(',"comm":"', 1)
            line = head + ',"comm":""' + rest.split('"', 1)[1]
        empty.append(line)
    path.write_text("".join(empty))
    assert '"comm":""' in path.read_text() and '"pid":0,"comm":""' in path.read_text()
    handed = []
    parse = engine_load.Loader._parse
    monkeypatch.setattr(engine_load.Loader, "_parse", lambda self, n, text, *a, **k: (handed.append(text),
                                                                                      parse(self, n, text, *a, **k))[1])
    outs = []
    for eng in ("duckdb", "python"):
        assert main(["report", "--engine", eng, "--no-lifecycles", "--json", str(path)]) in (0, None)
        outs.append(capsys.readouterr().out)
    assert handed == [] and outs[0] == outs[1]
