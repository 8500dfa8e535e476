"""The config file: /etc/socket-snoop/config.toml holds the monitor's command-line options.

Keys are the long option names, with '-' or '_' (`log-file`, `log_file`);
values are what the option takes: true/false for a switch, a string or a
number for a value, a list (or a single value) for a repeatable option:

    log-file = "/var/log/socket_monitor.json"
    json = true
    port = [22, 443]
    dst = ["10.0.0.0/8"]
    buffer-size = "16M"

Each value goes through the same type function and choices as on the
command line: both come from the option's declaration (an Option, see
option.py), which the parser is built from. The command line wins:
for a repeatable option, values given there replace the file's.

The file is read only if it can be trusted (trust.py): owned by root (or
the user running us) and writable by no one else, with every directory
above it and every symbolic link on the way; else one line, exit 2.
"""

import argparse
import difflib
import json
import os
import re
import stat
import tomllib

from ..errors import SnoopError
from .option import CONST, LIST, SWITCH, unmet_need
from .trust import is_dev_null, walk

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def escape(text):
    """Text for a message: each character that is not printable (control characters, bidi overrides, a
    surrogate from an undecodable file name) as its Python escape; nothing in a file can drive a terminal."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def show_key(key):
    """A TOML key for a message: as is if bare, else quoted and escaped as TOML's basic strings are."""
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def read(path, explicit):
    """The file's table; {} when the default file is absent. Errors: one line, status 2."""
    where = f"socket-snoop: config file {escape(path)}"
    try:
        why, real, st = walk(path)
        if is_dev_null(st):
            return {}, ""
        if why:
            raise SnoopError(f"{where}: refused: {escape(why)}; it must be owned by root and writable by no one "
                             "else, as must every directory above it", 2)
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            now = os.fstat(f.fileno())
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(now.st_mode):
                raise SnoopError(f"{where}: refused: not a regular file, or changed while it was checked", 2)
            raw = f.read()
    except FileNotFoundError:
        if not explicit:
            return {}, ""
        raise SnoopError(f"{where}: not found", 2) from None
    except OSError as e:
        raise SnoopError(f"{where}: cannot read it: {e.strerror}", 2) from None
    text = raw.decode("utf-8", "replace")
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        raise SnoopError(f"{where}: not valid TOML: {escape(e)}", 2) from None
    except RecursionError:  # tomllib parses nested arrays and inline tables by recursion
        raise SnoopError(f"{where}: refused: arrays or tables nested too deeply", 2) from None


def key_line(text, key):
    """The line number (1-based) where `key` is set, found by scanning the text; None if not found."""
    pat = re.compile(r"""^\s*(\[+\s*)?(["']?)%s\2\s*[=.\]]""" % re.escape(key))
    for n, line in enumerate(text.splitlines(), 1):
        if pat.match(line):
            return n
    return None


def _convert_one(opt, value):
    """One scalar through the option's type and choices, as argparse would."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError("expected a string or a number")
    if opt.type is not None:
        try:
            value = opt.type(value if isinstance(value, str) else str(value))
        except (argparse.ArgumentTypeError, TypeError, ValueError) as e:
            raise ValueError(str(e)) from None
    elif not isinstance(value, str):
        raise ValueError("expected a string")
    if opt.choices is not None and value not in opt.choices:
        raise ValueError("expected one of " + ", ".join(map(repr, opt.choices)))
    return value


def _convert_values(opt, flag, key, value):
    """A LIST or VALUE option's value (a list of them, or one) through _convert_one."""
    try:
        if opt.kind == LIST:
            return [_convert_one(opt, v) for v in (value if isinstance(value, list) else [value])]
        if isinstance(value, list):
            raise ValueError("expected one value, got a list")
        return _convert_one(opt, value)
    except (ValueError, SnoopError) as e:
        raise _Bad(key, _strip(str(e), flag)) from None


def convert(parser, table, given=None):
    """TOML table -> {dest: value}, by the Options the parser was built from (parser.declared, see
    option.py); a bad key raises _Bad(key, message). given: a dict that gets {Option: its key as written}."""
    out, given = {}, ({} if given is None else given)
    for key, value in table.items():
        flag = "--" + key.replace("_", "-")
        opt = parser.declared.get(flag)
        if opt is None or not opt.in_file:
            keys = [f[2:] for f, o in parser.declared.items() if o.in_file]
            close = difflib.get_close_matches(key.replace("_", "-"), keys, n=1)
            raise _Bad(key, "unknown key " + (f"(did you mean {close[0]}?)" if close else
                                              "(keys are the long command-line options, e.g. log-file, port, json)"))
        if value != []:  # `metrics-labels = []`: none, which needs nothing
            given[opt] = key
        if opt.kind in (SWITCH, CONST):
            if not isinstance(value, bool):
                raise _Bad(key, f"expected true or false, got {_show(value)}")
            if value:
                out[opt.name] = True if opt.kind == SWITCH else opt.const
            elif opt.kind == SWITCH:
                out[opt.name] = False
            # else `json = false`, `no-log-file = false`: nothing to do
        else:
            out[opt.name] = _convert_values(opt, flag, key, value)
    return out


class _Bad(Exception):
    def __init__(self, key, message):
        super().__init__(message)
        self.key = key
        self.message = message


def _show(value):
    return {str: "a string", int: "a number", float: "a number", list: "a list", dict: "a table"}.get(
        type(value), type(value).__name__) + (f" ({value!r})" if isinstance(value, (str, int, float)) else "")


def _strip(message, option):
    """'socket-snoop: --port: invalid value ...' -> 'invalid value ...' (the key is named anyway)."""
    for prefix in ("socket-snoop: ", f"{option}: "):
        if message.startswith(prefix):
            message = message[len(prefix):]
    return message


def _refuse(path, text, key, message):
    line = key_line(text, key)
    where = f"{path}, line {line}" if line else path
    raise SnoopError(f"socket-snoop: config file {escape(where)}: {show_key(key)}: {escape(message)}", 2)


def load(parser, path, explicit, given=None):
    """({dest: value}, the file's text) from the config file at `path`, validated by the Options `parser` was
    built from; given: as convert() takes it."""
    table, text = read(path, explicit)
    try:
        return convert(parser, table, given), text
    except _Bad as e:
        _refuse(path, text, e.key, e.message)


def parse_with_config(parser, argv, default_path):
    """Parse argv over the config file's values: the command line wins, and its list values replace the file's.
    An option that needs another (Option.needs) is refused without it, given on the command line or in the file."""
    first = parser.parse_args(argv)
    explicit = first.config is not None
    path = first.config if explicit else default_path
    in_file = {}
    values, text = load(parser, path, explicit, in_file)
    opts = first
    if values:
        parser.set_defaults(**values)
        opts = parser.parse_args(argv)
        for dest, value in values.items():
            if isinstance(value, list) and getattr(first, dest):  # given on the command line: replaces the file's
                setattr(opts, dest, getattr(first, dest))
    unmet = unmet_need(parser, parser.seen, opts)
    if unmet:
        raise SnoopError(f"{parser.prog}: {parser.seen[unmet[0]]} needs {_usage(unmet[1])}", 2)
    unmet = unmet_need(parser, in_file, opts)
    if unmet:
        _refuse(path, text, in_file[unmet[0]], f"needs {unmet[1].key} (in this file, or {_usage(unmet[1])}), "
                                               "which is not set")
    return opts


def _usage(opt):
    """'--syslog URL', '--journal'."""
    return f"{opt.long_flags[0]} {opt.metavar}" if opt.metavar else opt.long_flags[0]
