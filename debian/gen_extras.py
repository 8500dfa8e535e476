#!/usr/bin/python3
"""The package's generated files, at build time (debian/rules), into OUT and debian/:

- debian/socket-snoop.service and debian/socket-snoop.logrotate: rendered by the same code as
  `socket-snoop service install` (commands/service.py), for the default log file and /usr/bin/socket-snoop,
  so the unit's contract is written once;
- OUT/socket-snoop.1, OUT/socket-snoop (bash completion), OUT/config.toml (example config): the tree's own
  when it has one (a man page, completion or example config committed elsewhere in the tree), else the
  program's (`socket-snoop config --man`, `--bash-completion`, `--example`, made from the option
  declarations) where it has that option, else made here from the program's --help.

Runs the source tree's code (src/ on sys.path) with Debian's python3: nothing is downloaded.
"""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from socketsnoop import __version__ as VERSION  # noqa: E402
from socketsnoop.cli import COMMANDS  # noqa: E402
from socketsnoop.commands import service  # noqa: E402

PROGRAM = "/usr/bin/socket-snoop"
SKIP_DIRS = {".git", ".venv", "build", "dist", "debian", "cache", "__pycache__", ".pytest_cache"}
# where the tree's own files may be, by name (the first found wins)
TREE_NAMES = {
    "socket-snoop.1": ("socket-snoop.1",),
    "socket-snoop": ("socket-snoop.bash", "socket-snoop.bash-completion", "socket-snoop-completion.bash"),
    "config.toml": ("config.toml.example", "config.example.toml", "example-config.toml", "socket-snoop.toml"),
}
SUBCOMMANDS = tuple(COMMANDS)
# the program's own makers of these files, where it has them (socket-snoop config --help)
PROGRAM_FLAGS = {"socket-snoop.1": "--man", "socket-snoop": "--bash-completion", "config.toml": "--example"}
OPTION_LINE = re.compile(r"^  (-\S.*?)(?:\s{2,}(\S.*))?$")


def helptext(*args):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"), COLUMNS="100")
    return subprocess.run([sys.executable, "-m", "socketsnoop", *args, "--help"], env=env, cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout


def in_tree(name):
    """The tree's own file for NAME (its accepted names, anywhere but build and cache folders), or None.
    A completion named plain socket-snoop counts only in a folder whose path says completion."""
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for f in sorted(files):
            if f in TREE_NAMES[name] or (name == "socket-snoop" and f == name and "completion" in top):
                return os.path.join(top, f)
    return None


def from_program(name):
    """(text, source) from `socket-snoop config --man`, `--bash-completion` or `--example` where the program
    has that option (the files made from the option declarations themselves), else None."""
    flag = PROGRAM_FLAGS[name]
    if "config" not in COMMANDS or flag not in helptext("config"):
        return None
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "src"))
    p = subprocess.run([sys.executable, "-m", "socketsnoop", "config", flag], env=env, cwd="/", capture_output=True,
                       text=True)
    return (p.stdout, f"socket-snoop config {flag}") if p.returncode == 0 and p.stdout.strip() else None


def sections(text):
    """(title, [lines]) of an argparse --help: 'usage: ...' first, then each 'title:' block."""
    out, title = [], "usage"
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            title = line[:-1]
            out.append((title, []))
        elif not out:
            out.append((title, [line]))
        else:
            out[-1][1].append(line)
    return out


def options(lines):
    """[(option words, help)] from an argparse block, continuation lines joined."""
    found = []
    for line in lines:
        m = OPTION_LINE.match(line)
        if m:
            found.append([m.group(1).strip(), m.group(2) or ""])
        elif found and line.strip():
            found[-1][1] = (found[-1][1] + " " + line.strip()).strip()
    return found


def roff(text):
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text.startswith((".", "'")) else text


def usage_and_about(lines):
    """The usage (on one line) and the description of a --help's first block (split at its first blank line)."""
    blank = lines.index("") if "" in lines else len(lines)
    usage = " ".join(" ".join(ln.split()) for ln in lines[:blank]).removeprefix("usage: ")
    return usage, " ".join(ln.strip() for ln in lines[blank:] if ln.strip())


def man_section(title, lines):
    out = [f".SH {roff(title.upper())}"]
    opts = options(lines)
    if opts:
        for words, text in opts:
            out += [".TP", f"\\fB{roff(words)}\\fR", roff(text)]
    else:
        body = [ln.strip() for ln in lines if ln.strip()]
        if title == "examples":
            out += [".nf"] + [roff(ln) for ln in body] + [".fi"]
        else:
            out.append(roff(" ".join(body)))
    return out


def man_page():
    main = sections(helptext())
    usage, description = usage_and_about(main[0][1])
    out = [f'.TH SOCKET\\-SNOOP 1 "" "socket\\-snoop {VERSION}" "User Commands"',
           ".SH NAME", "socket\\-snoop \\- live TCP connection monitor on eBPF",
           ".SH SYNOPSIS", roff(usage)]
    for cmd in SUBCOMMANDS:
        out += [".br", f"\\fBsocket\\-snoop {cmd}\\fR ..."]
    out += [".SH DESCRIPTION", roff(description)]
    for title, lines in main[1:]:
        out += man_section(title, lines)
    for cmd in SUBCOMMANDS:
        sub = sections(helptext(cmd))
        usage, about = usage_and_about(sub[0][1])
        out += [f".SH COMMAND: {cmd.upper()}", roff(usage), ".PP", roff(about)]
        for title, lines in sub[1:]:
            for words, text in options(lines):
                out += [".TP", f"\\fB{roff(words)}\\fR", roff(text)]
    out += [".SH FILES", ".TP", "/etc/socket\\-snoop/config.toml",
            "the config file: the long options' names as keys (example: "
            "/usr/share/doc/socket\\-snoop/examples/config.toml)",
            ".TP", "/var/log/socket_monitor.log", "the default log file",
            ".SH SEE ALSO", "/usr/share/doc/socket\\-snoop/README.md.gz"]
    return "\n".join(out) + "\n"


def long_options(text):
    return sorted({w.rstrip(",") for words, _ in options(text.splitlines()) for w in words.split()
                   if w.startswith("--")})


def completion():
    cases = "".join(f"        {cmd}) opts=\"{' '.join(long_options(helptext(cmd)))}\" ;;\n" for cmd in SUBCOMMANDS)
    return f"""\
# bash completion for socket-snoop: subcommands and long options (made from --help at build time)
_socket_snoop() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} opts
    case ${{COMP_WORDS[1]}} in
{cases}        *) opts="{' '.join(SUBCOMMANDS)} {' '.join(long_options(helptext()))}" ;;
    esac
    [[ $cur == -* || $COMP_CWORD == 1 ]] || return 0
    mapfile -t COMPREPLY < <(compgen -W "$opts" -- "$cur")
}}
complete -o default -F _socket_snoop socket-snoop
"""


def example_config():
    out = ["# socket-snoop's config file: copy to /etc/socket-snoop/config.toml and uncomment what you need.",
           "# Keys are the command line's long options; switches take true, repeatable options a list.",
           "# The packaged unit's sandbox allows no network socket: after enabling metrics or syslog here,",
           "# run `socket-snoop service install` (a unit in /etc/systemd/system fitted to this file).", ""]
    for title, lines in sections(helptext())[1:]:
        for words, text in options(lines):
            longs = [w.rstrip(",") for w in words.split() if w.startswith("--")]
            if not longs or longs[0] in ("--help", "--version", "--config"):
                continue
            parts = words.split()
            metavar = parts[-1] if not parts[-1].startswith("-") else None
            key = longs[0][2:]
            value = "true" if metavar is None else f'"{metavar}"'
            if "repeatable" in text:
                value = f"[{value}]"
            out += [f"# {text}", f"#{key} = {value}"]
    return "\n".join(out) + "\n"


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    unit = service.render_unit([PROGRAM], log_files=[service.DEFAULT_LOG])
    unit = re.sub(r"\A# Installed by .*\n", "# Installed by the socket-snoop package, not enabled: "
                  "systemctl enable --now socket-snoop.\n# `socket-snoop service install` writes one "
                  "fitted to the config in /etc/systemd/system, which takes precedence.\n", unit)
    write(os.path.join(ROOT, "debian", "socket-snoop.service"), unit)
    write(os.path.join(ROOT, "debian", "socket-snoop.logrotate"), service.render_logrotate([service.DEFAULT_LOG]))
    makers = {"socket-snoop.1": man_page, "socket-snoop": completion, "config.toml": example_config}
    for name, make in makers.items():
        found, by_program = in_tree(name), from_program(name)
        if found:
            text, source = open(found).read(), f"the tree's {os.path.relpath(found, ROOT)}"
        elif by_program:
            text, source = by_program
        else:
            text, source = make(), "made from --help"
        write(os.path.join(out_dir, name), text)
        print(f"gen_extras: {name}: {source}")


if __name__ == "__main__":
    main(sys.argv[1])
