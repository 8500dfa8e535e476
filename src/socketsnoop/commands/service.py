"""`socket-snoop service install|uninstall`: a hardened systemd unit and a logrotate file.

The unit runs the monitor with the options of /etc/socket-snoop/config.toml
(the same options as the command line), so it is configured without editing
the unit. logrotate renames the log and sends SIGHUP; the monitor then
reopens its log file (no copytruncate, no lost lines).
"""

import os
import shutil
import subprocess
import sys

from dataclasses import replace

from ..errors import SnoopError
from ..settings.monitor import CONFIG, DEFAULT_LOG, RunSettings, options_from_config
from ..settings.option import SWITCH, VALUE, CommandParser, Option, freeze, settings_class
from ..settings.sandbox import ANY, ENV as SANDBOX_ENV, LOG_DIR, needed

UNIT_NAME = "socket-snoop.service"
UNIT_DIR = "/etc/systemd/system"
LOGROTATE_NAME = "socket-snoop"
LOGROTATE_DIR = "/etc/logrotate.d"


def _check(text, what):
    """Refuse what no unit or logrotate file can hold on one line (a newline would start a new directive)."""
    if not text.isprintable():
        raise SnoopError(f"socket-snoop service: {what} {ascii(text)} has a control or unprintable character; "
                         "it cannot be written in a unit file", 2)
    return text


def _quote(arg, exec_line=True):
    """One ExecStart argument (or, exec_line=False, one path of a path list such as ReadWritePaths=, where
    '$' is not special), quoted and escaped for systemd."""
    arg = _check(arg, "the argument").replace("%", "%%")
    if exec_line:
        arg = arg.replace("$", "$$")
    if any(c in arg for c in ' \t"\'\\;'):
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return arg


def _under_var_log(path):
    return path == "/var/log" or path.startswith("/var/log/")


def _logrotate_path(path):
    """A path in a logrotate file: in double quotes (spaces allowed). logrotate has no escape for '"' or
    '\\' there, and expands glob characters: such names are refused."""
    bad = sorted({c for c in path if c in '"\\*?[]{}\'' or not c.isprintable()})
    if bad or not os.path.isabs(path):
        raise SnoopError(f"socket-snoop service: log file {ascii(path)}: logrotate cannot name it "
                         + (f"(it has {' '.join(map(ascii, bad))}); " if bad else "(not absolute); ")
                         + "choose another log-file", 2)
    return f'"{path}"'


def entry_point():
    """(argv prefix, PYTHONPATH or None) that starts the monitor: the installed script by absolute path,
    else this interpreter with -m socketsnoop (and the source tree on PYTHONPATH if it needs it)."""
    found = shutil.which("socket-snoop")
    if found:
        return [os.path.realpath(found)], None
    argv0 = os.path.realpath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if os.path.basename(argv0) == "socket-snoop" and os.access(argv0, os.X_OK):
        return [argv0], None
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    probe = subprocess.run([sys.executable, "-I", "-c", "import socketsnoop"], cwd="/",
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return [sys.executable, "-m", "socketsnoop"], (None if probe.returncode == 0 else src)


def _network(box):
    """The unit's address families, IP access and bind lines for the configured outputs (settings/sandbox.py)."""
    families = " ".join(f for f in ("AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK") if f in box.families)
    netlink = ("# AF_NETLINK: NETLINK_SOCK_DIAG, the listeners' accept queues (the accept-queue-overflow warning)\n"
               if "AF_NETLINK" in box.families else "")
    if not box.families & {"AF_INET", "AF_INET6"}:
        return ("# no IP socket is opened (no network output); AF_UNIX for the journal\n"
                f"{netlink}RestrictAddressFamilies={families}\nIPAddressDeny=any\n")
    text = (f"# the outputs' sockets (metrics, syslog); AF_UNIX for the journal\n{netlink}"
            f"RestrictAddressFamilies={families}\n")
    if box.listen_ports:
        text += ("# the metrics endpoint's port, and no other\n"
                 + "".join(f"SocketBindAllow=tcp:{p}\n" for p in sorted(box.listen_ports)) + "SocketBindDeny=any\n")
    if ANY in box.peers:
        return text + ("# talking to hosts not known here (a metrics scraper, a collector by name): name them here\n"
                       "# to allow only them, e.g. IPAddressDeny=any and IPAddressAllow=10.0.0.5\n")
    return text + f"IPAddressDeny=any\nIPAddressAllow={' '.join(sorted(box.peers))}\n"


# The unit file; each {name} is made by a function below.
UNIT = """\
# Installed by `socket-snoop service install`; `socket-snoop service uninstall` removes it.
# Options: /etc/socket-snoop/config.toml (the command line's long options, e.g.
#   log-file = "/var/log/socket_monitor.json" / json = true / port = [22, 443]); then
#   systemctl restart socket-snoop. Lifecycle reports: socket-snoop report /var/log/socket_monitor.log*
[Unit]
Description=socket-snoop: TCP connection monitor (eBPF)
After=local-fs.target

[Service]
Type=simple
# -q: console lines would only copy the log into the journal; --no-report: the exit report
# (up to --max-tracked connections) would flood the journal on every stop. Health warnings are on
# (the default; journalctl SOCKETSNOOP_WARNING=KIND): config keys warn = ["close-wait-leak=120"], no-warnings = true
ExecStart={exec_start}
ExecReload=/bin/kill -HUP $MAINPID
{env}# what this unit allows, for the monitor to say at start what a changed config asks for beyond it
Environment={sandbox}
Restart=on-failure
RestartSec=5
User=root
UMask=0027

# Capabilities: CAP_BPF + CAP_PERFMON load and attach the tracing program and read the ring
# buffer; CAP_DAC_READ_SEARCH + CAP_SYS_PTRACE read /proc/PID/fd of other users' processes,
# to name the owners of sockets older than the monitor (without them those are attributed to
# whichever task the kernel was running). Memory for BPF maps: kernels before 5.11 count it
# against RLIMIT_MEMLOCK, hence LimitMEMLOCK=infinity (instead of CAP_SYS_RESOURCE).
# Not CAP_SYS_ADMIN (nor setns, RestrictNamespaces=yes): the accept-queue-overflow warning reads the
# listeners' queues of the host's network namespace only; in others (containers) their overflows are
# counted and said on stderr, not warned of (see docs/warnings.md).
CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_DAC_READ_SEARCH CAP_SYS_PTRACE
AmbientCapabilities=CAP_BPF CAP_PERFMON CAP_DAC_READ_SEARCH CAP_SYS_PTRACE
LimitMEMLOCK=infinity
# the metrics endpoint's connections must never take the descriptors the log and the rings need
LimitNOFILE=65536
{nice}NoNewPrivileges=yes

ProtectSystem=strict
ReadWritePaths={read_write}
{home}{private_tmp}
PrivateDevices=yes
PrivateMounts=yes
ProtectKernelModules=yes
ProtectKernelTunables=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
# not ProtectProc=invisible / ProcSubset=pid: owners are found in /proc/PID/fd, listeners in /proc/net
{network}RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
# ctypes callbacks (libffi closures) first try a W+X page; refused, libffi falls back to two
# mappings of a memfd (one writable, one executable), which this allows: checked under
# prctl(PR_SET_MDWE), the kernel's equivalent
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service bpf perf_event_open
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
"""


def _exec_start(command, config):
    """-q: console lines would only copy the log into the journal; --no-report: the exit report would flood
    the journal on every stop."""
    args = list(command) + (["--config", config] if config else []) + ["-q", "--no-report"]
    return " ".join(_quote(a) for a in args)


def _nice(boost):
    """The config's priority-boost as Nice=: systemd sets it before the monitor starts, which then finds
    itself there and needs no CAP_SYS_NICE (the unit does not grant it)."""
    if not boost:
        return "# priority-boost = 0: the monitor runs at the nice value it is given\n"
    return ("# A flood of connections must not starve the monitor watching it: at its fair share of CPU\n"
            "# against the processes making the flood it would fall behind and shed events (counted, but\n"
            f"# lost). The config's priority-boost ({boost}), as the monitor started by hand sets it.\n"
            f"Nice=-{boost}\n")


def _read_write(write_dirs):
    """/var/log, and each other directory a log is in. "-": systemd ignores a missing directory instead of
    failing to start the unit (the monitor then says it cannot open its log)."""
    rw = [LOG_DIR] + ["-" + d for d in sorted(set(write_dirs) - {LOG_DIR})]
    return " ".join(_quote(p, exec_line=False) for p in rw)


def _home_and_tmp(box):
    """ProtectHome= and PrivateTmp= lines: relaxed only as far as the config, the program or a path needs."""
    home = {"no": "ProtectHome=yes\n",
            "read-only": "# the program, the config or an output's file is under a home directory: readable, not "
                         "writable\nProtectHome=read-only\n",
            "read-write": "# a log is under a home directory: writable there (ReadWritePaths=), read-only "
                          "elsewhere\nProtectHome=read-only\n"}[box.home]
    private_tmp = ("# the config, a log or an output's file is under /tmp: PrivateTmp would hide it (or give the "
                   "log to a private /tmp that logrotate never sees)\nPrivateTmp=no" if box.real_tmp
                   else "PrivateTmp=yes")
    return home, private_tmp


def render_unit(command, pythonpath=None, config=None, log_files=(), opts=None):
    """The unit file's text. command: argv prefix that runs socket-snoop; opts: the config file's RunSettings
    (None: the defaults), from which the sandbox is derived (settings/sandbox.py)."""
    opts = opts or RunSettings()
    box = needed(opts, config, [*command, pythonpath or ""])
    box = replace(box, write_dirs=box.write_dirs | {os.path.dirname(os.path.abspath(p)) for p in log_files
                                                    if not _under_var_log(os.path.dirname(os.path.abspath(p)))})
    home, private_tmp = _home_and_tmp(box)
    return UNIT.format(exec_start=_exec_start(command, config), read_write=_read_write(box.write_dirs),
                       env=f"Environment=PYTHONPATH={_quote(pythonpath)}\n" if pythonpath else "",
                       sandbox=_quote(f"{SANDBOX_ENV}={box.encode()}", exec_line=False),
                       home=home, private_tmp=private_tmp, network=_network(box), nice=_nice(opts.priority_boost))


def render_logrotate(log_files):
    paths = " ".join(_logrotate_path(p) for p in log_files)
    return f"""\
# Installed by `socket-snoop service install`. socket-snoop reopens its log on SIGHUP,
# so the file is renamed and a new one created (no copytruncate: no lines lost).
{paths} {{
    daily
    maxsize 100M
    rotate 14
    compress
    delaycompress
    missingok
    notifempty
    create 0640 root adm
    sharedscripts
    postrotate
        systemctl kill -s HUP {UNIT_NAME} >/dev/null 2>&1 || true
    endscript
}}
"""


def log_files(opts):
    """The log files to rotate: the default one, and the configured one (RunSettings) if it differs."""
    files = [DEFAULT_LOG]
    if opts.log_file and os.path.abspath(opts.log_file) != DEFAULT_LOG:
        files.append(os.path.abspath(opts.log_file))
    return files


def _systemd_running():
    return os.path.isdir("/run/systemd/system")


def _systemctl(*args):
    try:
        subprocess.run(["systemctl", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    except (OSError, subprocess.SubprocessError):
        pass


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def install(opts, out):
    monitor_opts = options_from_config(opts.config)
    files = log_files(monitor_opts)
    command, pythonpath = entry_point()
    unit_path = os.path.join(opts.unit_dir, UNIT_NAME)
    rot_path = os.path.join(opts.logrotate_dir, LOGROTATE_NAME)
    unit = render_unit(command, pythonpath, opts.config, files, monitor_opts)
    rot = render_logrotate(files)
    if opts.dry_run:
        out.write(f"# {unit_path}\n{unit}\n# {rot_path}\n{rot}")
        return 0
    try:
        _write(unit_path, unit)
        _write(rot_path, rot)
    except OSError as e:
        raise SnoopError(f"socket-snoop service: cannot write {e.filename}: {e.strerror}"
                         + (" (run as root)" if e.errno in (1, 13) else "")) from None
    out.write(f"wrote {unit_path}\nwrote {rot_path}\n")
    if opts.unit_dir == UNIT_DIR and _systemd_running():
        _systemctl("daemon-reload")
    out.write(f"start it: systemctl enable --now {UNIT_NAME}\n")
    return 0


def uninstall(opts, out):
    paths = [os.path.join(opts.unit_dir, UNIT_NAME), os.path.join(opts.logrotate_dir, LOGROTATE_NAME)]
    present = [p for p in paths if os.path.exists(p)]
    if opts.dry_run:
        out.write("".join(f"would remove {p}\n" for p in present) or "nothing to remove\n")
        return 0
    if present and opts.unit_dir == UNIT_DIR and _systemd_running():
        _systemctl("disable", "--now", UNIT_NAME)
    for p in present:
        try:
            os.unlink(p)
        except OSError as e:
            raise SnoopError(f"socket-snoop service: cannot remove {p}: {e.strerror}"
                             + (" (run as root)" if e.errno in (1, 13) else "")) from None
        out.write(f"removed {p}\n")
    if not present:
        out.write(f"nothing to remove: no {paths[0]}, no {paths[1]}\n")
    elif opts.unit_dir == UNIT_DIR and _systemd_running():
        _systemctl("daemon-reload")
    return 0


SERVICE_OPTIONS = (
    Option(("--dry-run",), SWITCH, "print what would be written or removed", in_file=False, commands=("service",)),
    Option(("--unit-dir",), VALUE, f"default {UNIT_DIR}", default=UNIT_DIR, metavar="DIR", in_file=False,
           commands=("service",), value_type=str),
    Option(("--logrotate-dir",), VALUE, f"default {LOGROTATE_DIR}", default=LOGROTATE_DIR, metavar="DIR",
           in_file=False, commands=("service",), value_type=str),
    CONFIG,
)
ServiceSettings = settings_class("ServiceSettings", SERVICE_OPTIONS, "`socket-snoop service`'s settings.",
                                 positionals=[("action", str)])


def build_parser():
    p = CommandParser(prog="socket-snoop service",
                      description="Install or remove the systemd unit and the logrotate file.")
    p.add_argument("action", choices=("install", "uninstall"))
    p.add_group("install and uninstall", SERVICE_OPTIONS)
    return p


def main(argv):
    ns = build_parser().parse_args(argv)
    if ns.config:
        ns.config = os.path.abspath(ns.config)
    opts = freeze(ServiceSettings, ns)
    return (install if opts.action == "install" else uninstall)(opts, sys.stdout)
