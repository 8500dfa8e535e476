"""The parser every command uses, and options declared once.

CommandParser is argparse's parser with errors on one line (not the usage
block) and status 2. An Option is one option as data (its flags, its kind,
its type function, choices, default, help): CommandParser.add_group() adds
options to the parser from these records and keeps them in `declared`, which
is what config.py converts the config file's values by. Nothing here or
there reads argparse's private attributes.
"""

import argparse
from typing import Any, Callable, NamedTuple

# an Option's kind
SWITCH = "switch"  # --flag: True when given (argparse's store_true)
CONST = "const"  # --flag: sets another option's value to `const` (store_const), e.g. --json, --no-log-file
VALUE = "value"  # --option VALUE (store)
LIST = "list"  # --option VALUE, repeatable (append)

_ACTIONS = {SWITCH: "store_true", CONST: "store_const", VALUE: "store", LIST: "append"}


class Option(NamedTuple):
    flags: tuple  # e.g. ("-p", "--pid"): at least one long one
    kind: str  # SWITCH, CONST, VALUE or LIST
    help: str
    type: Callable | None = None  # str -> value; raises SnoopError (or ValueError) on a bad one
    choices: tuple | None = None
    default: Any = None  # LIST: [] when None
    dest: str | None = None  # None: from the first long flag, as argparse names it
    const: Any = None  # CONST: the value it sets
    metavar: str | None = None
    in_file: bool = True  # False: not a key of the config file (e.g. --config)

    @property
    def long_flags(self):
        return [f for f in self.flags if f.startswith("--")]

    @property
    def name(self):
        """The attribute of the parsed options: dest, or the first long flag without '--', '-' as '_'."""
        return self.dest or self.long_flags[0][2:].replace("-", "_")

    def argparse_kwargs(self):
        kw = {"action": _ACTIONS[self.kind], "dest": self.name, "help": self.help}
        if self.kind == CONST:
            kw["const"] = self.const
        if self.kind in (VALUE, LIST):
            kw["default"] = [] if self.kind == LIST and self.default is None else self.default
            for key in ("type", "choices", "metavar"):
                if getattr(self, key) is not None:
                    kw[key] = getattr(self, key)
        return kw


class CommandParser(argparse.ArgumentParser):
    """argparse's parser: errors on one line, options from Option records (see add_group)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.declared = {}  # '--long-flag' -> Option, of the options added by add_group

    def error(self, message):
        """One line, not the usage block."""
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")

    def add_group(self, title, options):
        """An argument group of the Options, in order."""
        group = self.add_argument_group(title)
        for opt in options:
            group.add_argument(*opt.flags, **opt.argparse_kwargs())
            self.declared.update((flag, opt) for flag in opt.long_flags)
        return group
