"""What is made from the option declarations besides the parser: the effective configuration and the example
config file (TOML), the man page (roff) and bash completion. `socket-snoop config` prints each."""

import json

from .. import __version__
from .monitor import COMMANDS, DEFAULT_CONFIG, DEFAULT_LOG, EXAMPLES, GROUPS
from .option import CONST, LIST, SWITCH


def _text(opt, value):
    """One value as the option takes it (TOML: a number stays a number)."""
    if opt.show is not None:
        return opt.show(value)
    return value if isinstance(value, (bool, int, float)) else str(value)


def toml(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(toml, value)) + "]"
    return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's


def _file_options():
    for title, options in GROUPS:
        yield title, [o for o in options if o.key is not None]


def effective(settings):
    """The settings as a config file that gives them back (every key; what is unset, as a comment)."""
    out = ["# socket-snoop's effective configuration: the config file's, then the command line's",
           f"# (as a config file: socket-snoop config > {DEFAULT_CONFIG})"]
    by_flag = {f: o for _title, options in GROUPS for o in options for f in o.long_flags}
    for title, options in _file_options():
        out.append(f"\n# {title}")
        consts = {(o.name, o.const): o for o in options if o.kind == CONST}
        for opt in options:
            if opt.kind == CONST:
                continue
            value = getattr(settings, opt.name)
            wanted = by_flag[opt.needs] if opt.needs else None
            if wanted is not None and getattr(settings, wanted.name) in (None, False, ()):
                out.append(f"# {opt.key}: needs {wanted.key}")  # the file would be refused with it
            elif (opt.name, value) in consts and value != opt.default:
                out.append(f"{consts[opt.name, value].key} = true")
            elif value is None:
                out.append(f"# {opt.key}: not set")
            elif opt.kind == LIST:
                out.append(f"{opt.key} = {toml([_text(opt, v) for v in value])}")
            else:
                out.append(f"{opt.key} = {toml(_text(opt, value))}")
    return "\n".join(out) + "\n"


def example():
    """The example config file: every key, commented out, with its help and a value it takes."""
    out = [f"# {DEFAULT_CONFIG}: the monitor's options (the command line's long options, without '--').",
           "# The command line wins over this file; for a repeatable option its values replace the file's.",
           "# The file must be root's and writable by no one else, as every directory above it.",
           "# After a change: systemctl restart socket-snoop (and `socket-snoop service install` again if",
           "# an output was added: the unit's sandbox follows this file)."]
    for title, options in _file_options():
        out.append(f"\n# -- {title}")
        for opt in options:
            value = opt.example if opt.example is not None else opt.default
            if opt.kind in (SWITCH, CONST):
                value = True
            elif opt.kind == LIST:
                value = [value]
            out.append(f"# {opt.described}")
            out.append(f"#{opt.key} = {toml(value)}")
    return "\n".join(out) + "\n"


def _roff(text):
    text = str(text).replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.splitlines())


def man_page():
    """socket-snoop.1, from the declarations (roff, man(7) macros)."""
    out = [f'.TH SOCKET\\-SNOOP 1 "" "socket\\-snoop {__version__}" "User Commands"',
           ".SH NAME", "socket\\-snoop \\- live TCP connection monitor (eBPF)",
           ".SH SYNOPSIS", ".B socket\\-snoop", "[\\fIOPTIONS\\fR]", ".br", ".B socket\\-snoop",
           "\\fICOMMAND\\fR [\\fIARGS\\fR]",
           ".SH DESCRIPTION",
           _roff("Every TCP state change, retransmission and reset, with the owning process, from tracepoints of "
                 "the running kernel (eBPF). No packets are captured. Lines go to the console and to "
                 f"{DEFAULT_LOG}; the options below choose others, and the filters, applied in the kernel, what "
                 "is shown. Within one filter kind the values are OR-ed, across kinds AND-ed."),
           ".SH COMMANDS"]
    for name, text in COMMANDS:
        out += [".TP", f".B {_roff(name)}", _roff(text) + f" (socket\\-snoop {_roff(name)} \\-\\-help)"]
    out.append(".SH OPTIONS")
    for title, options in GROUPS:
        out.append(f'.SS "{_roff(title)}"')
        for opt in options:
            flags = ", ".join(f"\\fB{_roff(f)}\\fR" for f in opt.flags)
            arg = f" \\fI{_roff(opt.metavar or opt.name.upper())}\\fR" if opt.kind in ("value", "list") else ""
            out += [".TP", flags + arg, _roff(opt.described) + (" (repeatable)" if opt.kind == LIST and
                                                                  "repeatable" not in opt.help else "")]
    out += [".SH FILES", ".TP", f".I {_roff(DEFAULT_CONFIG)}",
            _roff("the options, as TOML (keys: the long options without '--'); socket-snoop config --example "
                  "prints one with every key"),
            ".TP", f".I {_roff(DEFAULT_LOG)}", "the default log file",
            ".SH EXAMPLES", ".nf", _roff(EXAMPLES.split("\n", 1)[1].rstrip()), ".fi"]
    return "\n".join(out) + "\n"


_COMPLETION = """\
# bash completion for socket-snoop (generated from its option declarations: socket-snoop config --bash-completion)
_socket_snoop() {{
    local cur prev cmd
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    cmd=""
    if [ "$COMP_CWORD" -gt 1 ]; then cmd="${{COMP_WORDS[1]}}"; fi
    case "$cmd" in
{commands}
        *)
            if [ "$COMP_CWORD" -eq 1 ] && [[ "$cur" != -* ]]; then
                COMPREPLY=($(compgen -W "{names}" -- "$cur")); return
            fi
            cmd="" ;;
    esac
    case "$cmd $prev" in
{values}
    esac
    case "$cmd" in
{flags}
    esac
}}
complete -F _socket_snoop socket-snoop
"""


def bash_completion(parsers):
    """parsers: {command name ('' for the monitor): its CommandParser}."""
    commands = "\n".join(f"        {name}) ;;" for name in parsers if name)
    values, flags = [], []
    for name, parser in parsers.items():
        for flag in sorted(parser.value_flags):
            opt = parser.declared.get(flag)
            choices = list(opt.choices) if opt is not None and opt.choices else None
            metavar = (opt.metavar or "") if opt is not None else ""
            if choices:
                reply = f'COMPREPLY=($(compgen -W "{" ".join(choices)}" -- "$cur"))'
            elif metavar in ("PATH", "FILE", "DIR") or flag in ("--unit-dir", "--logrotate-dir"):
                reply = 'COMPREPLY=($(compgen -f -- "$cur"))'
            else:
                reply = "COMPREPLY=()"
            values.append(f'        "{name} {flag}") {reply}; return ;;')
        words = " ".join(parser.words + [f for f in parser.flags if f.startswith("--")])
        files = ' $(compgen -f -- "$cur")' if name == "report" else ""
        flags.append(f'        "{name}") COMPREPLY=($(compgen -W "{words}" -- "$cur"){files}) ;;')
    return _COMPLETION.format(commands=commands, names=" ".join(n for n in parsers if n), values="\n".join(values),
                              flags="\n".join(flags))
