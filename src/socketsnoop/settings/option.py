"""An option as data, the parser every command uses, and the typed settings made from both.

An Option is one option, declared once: its flags, kind, type function, choices, default, help, its key in
the config file (or none) and the commands that take it. CommandParser.add_group() adds Options to the
parser (its `declared` maps each long flag to its Option: the config file is converted by it), and
settings_class() makes the frozen dataclass a command receives, one typed field per option.

CommandParser is argparse's parser with: errors on one line and status 2; no abbreviations; a suggestion
for a mistyped option or command (an option it begins, else difflib's closest); two options that set the same
value differently refused
(`--json --format text`); a negative number accepted as an option's value (`--duration -5` is then refused by
the option's own type, with its own message, not "expected one argument").
"""

import argparse
import dataclasses
import difflib
import functools
import re
from typing import Any, Callable

from ..errors import SnoopError

# an Option's kind
SWITCH = "switch"  # --flag: True when given
CONST = "const"  # --flag: sets another option's value to `const`, e.g. --json, --no-log-file
VALUE = "value"  # --option VALUE
LIST = "list"  # --option VALUE, repeatable

_NEGATIVE = re.compile(r"-\.?\d")
_MONITOR = "socket-snoop"  # the program's name, which the declarations' messages begin with


@dataclasses.dataclass(frozen=True, eq=False)  # each declared once: compared and hashed as itself (CommandParser.seen)
class Option:
    flags: tuple  # e.g. ("-p", "--pid"): at least one long one
    kind: str  # SWITCH, CONST, VALUE or LIST
    help: str
    type: Callable | None = None  # str -> value; raises SnoopError (or ValueError) on a bad one
    choices: tuple | None = None
    default: Any = None  # LIST: () when None
    dest: str | None = None  # None: from the first long flag, as argparse names it
    const: Any = None  # CONST: the value it sets
    metavar: str | None = None
    in_file: bool = True  # False: not a key of the config file (e.g. --config)
    commands: tuple = ("run",)  # the commands that take it
    value_type: Any = None  # the settings field's type (None: from the kind and the default)
    example: Any = None  # a value for the example config (None: its default)
    show: Callable | None = None  # a value -> its text as given (None: str)
    needs: str | None = None  # the long flag of the option without which this one does nothing (see unmet_need)

    @property
    def described(self):
        """Its help, saying what it needs (--help, the man page and the example config show this)."""
        return f"{self.help} (needs {self.needs})" if self.needs else self.help

    @property
    def long_flags(self):
        return [f for f in self.flags if f.startswith("--")]

    @property
    def name(self):
        """The settings' field: dest, or the first long flag without '--', '-' as '_'."""
        return self.dest or self.long_flags[0][2:].replace("-", "_")

    @property
    def key(self):
        """Its key in the config file (None: not one), the long flag without '--' ('_' also taken)."""
        return self.long_flags[0][2:] if self.in_file else None

    @property
    def field_default(self):
        return () if self.kind == LIST and self.default is None else (False if self.kind == SWITCH else self.default)

    def field_type(self):
        if self.value_type is not None:
            return self.value_type
        return {SWITCH: bool, LIST: tuple}.get(self.kind, Any)


class _Act(argparse.Action):
    """Every Option's action: stores as its kind says, and notes which option set which field (for the
    conflicts CommandParser refuses)."""

    def __init__(self, option_strings, dest, option=None, **kw):
        super().__init__(option_strings, dest, **kw)
        self.option = option

    def __call__(self, parser, namespace, values, option_string=None):
        opt = self.option
        parser.seen.setdefault(opt, option_string)
        value = {SWITCH: True, CONST: opt.const}.get(opt.kind, values)
        if opt.kind == LIST:
            value = [*getattr(namespace, self.dest), values]
        else:
            parser.note(self.dest, opt, option_string, value)
        setattr(namespace, self.dest, value)


def argparse_kwargs(opt):
    kw = {"action": _Act, "option": opt, "dest": opt.name, "help": opt.described}
    if opt.kind in (SWITCH, CONST):
        kw["nargs"] = 0
        if opt.kind == SWITCH:
            kw["default"] = False
    else:
        kw["default"] = [] if opt.kind == LIST and opt.default is None else opt.default
        for key in ("type", "choices", "metavar"):
            if getattr(opt, key) is not None:
                kw[key] = getattr(opt, key)
    return kw


class CommandParser(argparse.ArgumentParser):
    """argparse's parser: errors on one line, options from Option records (see add_group)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        self.passes_unknown = kwargs.pop("passes_unknown", False)  # parse_known_args leaves them to another
        self.declared = {}  # '--long-flag' -> Option, of the options added by add_group
        self.also_flags = []  # another parser's options, taken here too (`config` takes its own and the monitor's)
        self.words = []  # the choices of its positional arguments (for completion)
        self.given = {}  # dest -> (Option, the flag given, value): conflicts (see note)
        self.seen = {}  # Option -> the flag it was given with, on the command line
        super().__init__(*args, **kwargs)

    @property
    def flags(self):
        """Every option string, for suggestions (of groups, mutually exclusive ones too)."""
        return [f for action in self._actions for f in action.option_strings] + self.also_flags

    @property
    def value_flags(self):
        """The option strings that take a value."""
        return {f for action in self._actions if action.nargs != 0 for f in action.option_strings}

    def add_argument(self, *args, **kwargs):
        if "type" in kwargs:
            kwargs["type"] = _naming(kwargs["type"], self.prog)
        action = super().add_argument(*args, **kwargs)
        if not action.option_strings and action.choices:
            self.words += list(action.choices)
        return action

    def add_group(self, title, options):
        """An argument group of the Options, in order."""
        group = self.add_argument_group(title)
        for opt in options:
            kw = argparse_kwargs(opt)
            if "type" in kw:
                kw["type"] = _naming(kw["type"], self.prog)
            group.add_argument(*opt.flags, **kw)
            self.declared.update((flag, opt) for flag in opt.long_flags)
        return group

    def note(self, dest, opt, flag, value):
        """Two options setting one field to two values (--json --format text, --log-file X --no-log-file)."""
        seen = self.given.get(dest)
        if seen and seen[0] is not opt and seen[2] != value:
            self.error(f"{_shown(seen[1], seen[0], seen[2])} and {_shown(flag, opt, value)} conflict: give one")
        self.given[dest] = (opt, flag, value)

    def parse_known_args(self, args=None, namespace=None):
        self.given, self.seen = {}, {}
        args = self._negatives(args)
        if not self.passes_unknown:
            self._unknown(args)
        return super().parse_known_args(args, namespace)

    def _unknown(self, args):
        """An option this parser does not have, named as such (argparse may first take the word after it for a
        command: `--prot 80`, "invalid choice: '80'")."""
        known = set(self.flags)
        for arg in args or ():
            if arg == "--":
                return
            if arg.startswith("--") and arg.split("=", 1)[0] not in known:
                self.error(f"unrecognized arguments: {arg}")
            if arg.startswith("-") and not arg.startswith("--") and len(arg) > 1 and arg[:2] not in known \
                    and not _NEGATIVE.match(arg):
                self.error(f"unrecognized arguments: {arg}")

    def _negatives(self, args):
        """`--duration -5` as `--duration=-5`: argparse would take -5 for an option (the parser has -4 and -6)."""
        if args is None:
            return None
        out, args, value_flags = [], list(args), self.value_flags
        i = 0
        while i < len(args):
            if args[i] in value_flags and i + 1 < len(args) and _NEGATIVE.match(args[i + 1]):
                out.append(f"{args[i]}={args[i + 1]}")
                i += 2
                continue
            out.append(args[i])
            i += 1
        return out

    def error(self, message):
        """One line, not the usage block; a suggestion for a mistyped option or command."""
        self.exit(2, f"{self.prog}: {message}{self._suggestion(message)} (see {self.prog} --help)\n")

    def _suggestion(self, message):
        m = re.match(r"unrecognized arguments: (\S+)", message)
        if m and m.group(1).startswith("-"):
            word, candidates = m.group(1).split("=", 1)[0], [f for f in self.flags if f.startswith("--")]
        else:
            m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
            if not m:
                return ""
            word, candidates = m.group(1), re.findall(r"'([^']*)'", m.group(2))
        begun = [c for c in candidates if c.startswith(word)]  # `--dur`: --duration, not the closer-looking --addr
        close = difflib.get_close_matches(word, begun, n=1, cutoff=0) if begun else \
            difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
        return f"; did you mean {close[0]}?" if close else ""


def _naming(convert, prog):
    """A type function whose error names the command that parses it (`socket-snoop top: --interval: ...`): the
    declarations' own messages begin 'socket-snoop: ', the monitor's name."""
    @functools.wraps(convert)
    def named(value):
        try:
            return convert(value)
        except SnoopError as e:
            text = str(e)
            if prog == _MONITOR or not text.startswith(_MONITOR + ": "):
                raise
            raise SnoopError(prog + text[len(_MONITOR):], e.status) from None
    return named


def unmet_need(parser, given, namespace):
    """The first of the `given` Options that needs another (Option.needs) which has no value in `namespace`, as
    (that Option, the one it needs); None if each has what it needs. The one rule for an option that would do
    nothing alone (--syslog-ca without --syslog): the caller refuses it, naming where it was given."""
    for opt in given:
        wanted = parser.declared[opt.needs] if opt.needs else None
        if wanted is not None and getattr(namespace, wanted.name) in (None, False, (), []):
            return opt, wanted
    return None


def _shown(flag, opt, value):
    return flag if opt.kind in (SWITCH, CONST) else f"{flag} {value}"


def settings_class(name, options, doc, positionals=()):
    """A frozen dataclass with one field per option (the CONST ones set another's field), in order, after
    the (name, type) of each positional argument."""
    fields, seen = list(positionals), set()
    for opt in options:
        if opt.kind == CONST or opt.name in seen:
            continue
        seen.add(opt.name)
        fields.append((opt.name, opt.field_type(), dataclasses.field(default=opt.field_default)))
    cls = dataclasses.make_dataclass(name, fields, frozen=True)
    cls.__doc__ = doc
    return cls


def freeze(cls, namespace):
    """The settings object from a parsed namespace: lists as tuples (the object cannot be changed)."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in vars(namespace).items() if k in names}
    return cls(**values)
