"""`socket-snoop config [OPTIONS]`: the effective configuration, the config file's and then the options given
here, as the monitor would run with them, printed as a config file; or, made from the same option
declarations, the example config file, the man page or bash completion."""

import sys

from ..settings import docs
from ..settings.monitor import build_parser as monitor_parser
from ..settings.monitor import options_from_config
from ..settings.monitor import monitor_options
from ..settings.option import CommandParser
from . import check, report, service


def build_parser():
    p = CommandParser(prog="socket-snoop config", passes_unknown=True,
                      description="Print the effective configuration (the config file's, then the monitor's options "
                                  "given here) as a config file; or one of the files made from the options.")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--example", action="store_true", help="an example config file: every key, commented out")
    what.add_argument("--man", action="store_true", help="the man page (roff): socket-snoop config --man > "
                                                         "socket-snoop.1; man ./socket-snoop.1")
    what.add_argument("--bash-completion", action="store_true",
                      help="bash completion, e.g. > /etc/bash_completion.d/socket-snoop")
    return p


def _monitor_parser(own):
    """The monitor's parser for the options given here: its errors name `socket-snoop config`, and a mistyped
    option may be one of config's own (`--exa`: did you mean --example?)."""
    p = monitor_parser(prog=own.prog)
    p.also_flags = [f for f in own.flags if f not in p.flags]
    return p


def main(argv):
    own = build_parser()
    opts, rest = own.parse_known_args(argv)
    if (opts.example or opts.man or opts.bash_completion) and rest:
        own.error(f"unrecognized arguments: {' '.join(rest)}")
    if opts.example:
        text = docs.example()
    elif opts.man:
        text = docs.man_page()
    elif opts.bash_completion:
        text = docs.bash_completion({"": monitor_parser(), "check": check.build_parser(),
                                     "service": service.build_parser(), "report": report.build_parser(),
                                     "config": build_parser()})
    else:
        text = docs.effective(monitor_options(rest, _monitor_parser(own)) if rest else options_from_config())
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        pass
    return 0
