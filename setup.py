"""The one part of socket-snoop that is compiled: report's reader of text log lines
(src/socketsnoop/commands/report/linescan.c, loaded with ctypes by engine_scan.py; no Python API). Optional:
where no C compiler is at hand the package installs without it and the report's fast path has DuckDB read
every line itself (slower). SOCKETSNOOP_NO_EXTENSION=1 leaves it out (Debian's package, which has no DuckDB).
Everything else is in pyproject.toml."""

import os

from setuptools import Extension, setup

REPORT = "src/socketsnoop/commands/report"
ext_modules = [] if os.environ.get("SOCKETSNOOP_NO_EXTENSION") else [
    Extension("socketsnoop.commands.report._linescan", [f"{REPORT}/linescan.c"], optional=True,
              extra_compile_args=["-O2", "-std=gnu11", "-Wall"])]
setup(ext_modules=ext_modules)
