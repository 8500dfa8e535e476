"""Command line: `socket-snoop [options]` runs the monitor; `check`, `service`, `report`, `config` and `top` are
commands (settings/monitor.py lists them for --help; a mistyped one gets a suggestion there). This module only
dispatches: each command is a module of commands/ with main(argv)."""

import sys

from .commands import check, config, report, run, service, top
from .errors import SnoopError

COMMANDS = {"check": check.main, "service": service.main, "report": report.main, "config": config.main,
            "top": top.main}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] in COMMANDS:
            return COMMANDS[argv[0]](argv[1:])
        return run.main(argv)
    except SnoopError as e:
        print(str(e), file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        return 130
