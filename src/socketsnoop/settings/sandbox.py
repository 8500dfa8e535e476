"""The systemd sandbox a configuration needs: the address families, the IP peers, the ports it listens on,
the directories it writes, whether /tmp and the home directories must stay visible. `service install` writes
the unit's lines from it (commands/service.py) and puts its summary in the unit's environment
(SOCKETSNOOP_SANDBOX); the monitor compares, at start, what its own settings need with what the unit grants,
and says in one line what the unit forbids (a config changed after the unit was installed)."""

import ipaddress
import os
from dataclasses import dataclass
from urllib.parse import quote, unquote

from .warnings import thresholds_from

ENV = "SOCKETSNOOP_SANDBOX"
TMP_DIRS = ("/tmp/", "/var/tmp/")
HOME_DIRS = ("/home/", "/root/", "/run/user/")
LOG_DIR = "/var/log"
ANY = "any"  # peers: any address (a collector by name, a metrics endpoint on a public address)


@dataclass(frozen=True)
class Sandbox:
    families: frozenset  # AF_UNIX (the journal), AF_INET, AF_INET6, AF_NETLINK (the listeners' accept queues)
    peers: frozenset  # IPAddressAllow= values; ANY among them: no IP restriction
    listen_ports: frozenset  # TCP ports it binds (--metrics)
    write_dirs: frozenset  # directories it writes to (the logs')
    real_tmp: bool  # a path it uses is under /tmp or /var/tmp: no PrivateTmp
    home: str  # "no": home directories hidden; "read-only"; "read-write" (a log under one)

    def encode(self):
        """One environment value: families=AF_UNIX,AF_INET;peers=...;ports=...;write=...;tmp=1;home=no."""
        def items(values):
            return ",".join(quote(str(v), safe="/:") for v in sorted(values, key=str))
        return (f"families={items(self.families)};peers={items(self.peers)};ports={items(self.listen_ports)};"
                f"write={items(self.write_dirs)};tmp={int(self.real_tmp)};home={self.home}")

    @classmethod
    def decode(cls, text):
        parts = dict(p.partition("=")[::2] for p in text.split(";"))

        def items(key):
            return frozenset(unquote(v) for v in parts.get(key, "").split(",") if v)
        return cls(items("families"), items("peers"), frozenset(int(p) for p in items("ports") if p.isdigit()),
                   items("write"), parts.get("tmp") == "1", parts.get("home", "no"))

    def forbids(self, needed):
        """What `needed` asks for that this sandbox does not grant, as short phrases."""
        out = [f"{f} sockets" for f in sorted(needed.families - self.families)]
        if ANY not in self.peers:
            out += [f"talking to {p}" for p in sorted(needed.peers - self.peers)]
        out += [f"listening on port {p}" for p in sorted(needed.listen_ports - self.listen_ports)]
        out += [f"writing to {d}" for d in sorted(needed.write_dirs)
                if not any(d == w or d.startswith(w.rstrip("/") + "/") for w in self.write_dirs)]
        if needed.real_tmp and not self.real_tmp:
            out.append("the host's /tmp (the unit has PrivateTmp=yes)")
        rank = {"no": 0, "read-only": 1, "read-write": 2}
        if rank.get(needed.home, 0) > rank.get(self.home, 0):
            out.append(f"home directories {needed.home} (the unit has ProtectHome={_protect_home(self.home)})")
        return out


def _protect_home(home):
    return {"no": "yes", "read-only": "read-only"}.get(home, "no")


def _family(host):
    try:
        return "AF_INET6" if ipaddress.ip_address(host).version == 6 else "AF_INET"
    except ValueError:
        return None


def needed(settings, config=None, program=()):
    """The Sandbox of a RunSettings (and its config file, and the paths the program runs from)."""
    families, peers, ports = {"AF_UNIX"}, set(), set()
    thresholds = thresholds_from(settings)
    if thresholds is not None and thresholds.accept_queue_overflow is not None:
        families.add("AF_NETLINK")  # its listeners' queues: NETLINK_SOCK_DIAG (pipeline/listen_queues.py)
    if settings.metrics:
        host, port = settings.metrics
        families.add(_family(host))
        ports.add(port)
        peers.add("localhost" if ipaddress.ip_address(host).is_loopback else ANY)
    if settings.syslog is not None:
        family = _family(settings.syslog.host)
        families.update([family] if family else ["AF_INET", "AF_INET6"])  # a name: whatever DNS answers
        peers.add(str(ipaddress.ip_address(settings.syslog.host)) if family else ANY)
    logs = [os.path.abspath(p) for p in (LOG_DIR + "/socket_monitor.log", settings.log_file) if p]
    write = {LOG_DIR} | {os.path.dirname(p) for p in logs if not _under(p, LOG_DIR)}
    read = [os.path.abspath(p) for p in (config, settings.journal_socket, settings.syslog_ca, *program) if p]
    real_tmp = any(p.startswith(TMP_DIRS) for p in read + logs)
    home = ("read-write" if any(p.startswith(HOME_DIRS) for p in logs)
            else "read-only" if any(p.startswith(HOME_DIRS) for p in read) else "no")
    return Sandbox(frozenset(families), frozenset(peers), frozenset(ports), frozenset(write), real_tmp, home)


def _under(path, directory):
    return path == directory or path.startswith(directory + "/")


def conflict_line(settings, environ=None):
    """One warning line when the unit we run in (its SOCKETSNOOP_SANDBOX) forbids what the settings ask
    for, else None. Outside such a unit: None."""
    granted = (os.environ if environ is None else environ).get(ENV)
    if not granted:
        return None
    forbidden = Sandbox.decode(granted).forbids(needed(settings, settings.config))
    if not forbidden:
        return None
    return ("socket-snoop: warning: the service unit forbids what the config asks for: " + "; ".join(forbidden)
            + " (the config changed since `socket-snoop service install`: run it again, then systemctl "
            "daemon-reload and restart)")
