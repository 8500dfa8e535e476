"""The fast report path's two readers of text lines: the compiled one (commands/report/linescan.c, built by
setup.py where a C compiler is at hand) and DuckDB's own patterns (engine_load.py), which it replaces where it is
built. `reader` runs a test with each: in this process (engine_scan's library cached as missing) and in the
reports it starts (SOCKETSNOOP_REPORT_NO_SCAN=1)."""

import shutil

import pytest
from socketsnoop.commands.report import engine_scan


@pytest.fixture(params=["compiled", "duckdb"])
def reader(request, monkeypatch):
    if request.param == "compiled":
        if engine_scan.library() is None:
            # built by every install where a C compiler is at hand (tests/run installs gcc): its absence there is
            # a failed build, not a machine without a compiler
            assert not shutil.which("cc"), "a C compiler is here, but the compiled reader was not built"
            pytest.skip("no C compiler at install: the compiled reader is not built")
    else:
        monkeypatch.setenv("SOCKETSNOOP_REPORT_NO_SCAN", "1")
        monkeypatch.setattr(engine_scan, "_lib", False)
    return request.param
