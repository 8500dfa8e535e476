"""Real receivers for the output tests: a namespaced systemd-journald, and rsyslogd with a private config
(imudp, imtcp, imtcp over gtls), a test CA and certificates made with certtool. Always stopped and removed."""

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import time

from support.net import free_port
from support.system import uniq

JOURNALD = "/lib/systemd/systemd-journald"


def _wait(pred, timeout=10.0, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return False


# -- journald --------------------------------------------------------------------------------------------
class Journal:
    def __init__(self, name):
        self.name = name
        self.socket = f"/run/systemd/journal.{name}/socket"
        self.proc = None

    def entries(self, *matches):
        """Our entries (SYSLOG_IDENTIFIER=socket-snoop), each a dict of str values (bytes fields decoded)."""
        r = subprocess.run(["journalctl", f"--namespace={self.name}", "-o", "json", "--all", "--no-pager",
                            "SYSLOG_IDENTIFIER=socket-snoop", *matches], capture_output=True, text=True, timeout=60)
        out = []
        for line in r.stdout.splitlines():
            e = json.loads(line)
            out.append({k: bytes(v).decode("utf-8", "surrogateescape") if isinstance(v, list) else v
                        for k, v in e.items()})
        return out


@contextlib.contextmanager
def journald():
    """A journald of its own namespace (it exits after ~30 s without traffic: one per test)."""
    j = Journal(uniq("ssj"))
    j.proc = subprocess.Popen([JOURNALD, j.name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert _wait(lambda: os.path.exists(j.socket)), "journald did not start"
        yield j
    finally:
        j.proc.terminate()
        try:
            j.proc.wait(10)
        except subprocess.TimeoutExpired:
            j.proc.kill()
            j.proc.wait()
        for d in glob.glob(f"/var/log/journal/*.{j.name}") + glob.glob(f"/run/log/journal/*.{j.name}") + [
                f"/run/systemd/journal.{j.name}"]:
            shutil.rmtree(d, ignore_errors=True)


# -- certificates ----------------------------------------------------------------------------------------
def _certtool(*args):
    subprocess.run(["certtool", *args], check=True, capture_output=True, timeout=60)


def make_ca(d, name="ca"):
    key, cert, tmpl = d / f"{name}-key.pem", d / f"{name}.pem", d / f"{name}.tmpl"
    _certtool("--generate-privkey", "--key-type=ecdsa", "--outfile", str(key))
    tmpl.write_text(f'cn = "socket-snoop test {name}"\nca\ncert_signing_key\nexpiration_days = 2\n')
    _certtool("--generate-self-signed", "--load-privkey", str(key), "--template", str(tmpl), "--outfile", str(cert))
    return cert, key


def make_cert(d, ca, name="server", ip="127.0.0.1", dns="localhost"):
    """A server certificate signed by ca (cert, key), for ip and dns (None: left out)."""
    key, cert, tmpl = d / f"{name}-key.pem", d / f"{name}.pem", d / f"{name}.tmpl"
    _certtool("--generate-privkey", "--key-type=ecdsa", "--outfile", str(key))
    text = f'cn = "{dns or ip}"\n' + (f'ip_address = "{ip}"\n' if ip else "") + (f'dns_name = "{dns}"\n' if dns else "")
    tmpl.write_text(text + "tls_www_server\nsigning_key\nexpiration_days = 2\n")
    _certtool("--generate-certificate", "--load-privkey", str(key), "--load-ca-certificate", str(ca[0]),
              "--load-ca-privkey", str(ca[1]), "--template", str(tmpl), "--outfile", str(cert))
    return cert, key


# -- rsyslogd --------------------------------------------------------------------------------------------
# one line per message: severity, facility, MSGID, structured data, MSG (control characters as #ooo)
TEMPLATE = "%syslogseverity-text%\\t%syslogfacility-text%\\t%msgid%\\t%structured-data%\\t%msg%\\n"


class Rsyslog:
    def __init__(self, d, ca_cert, cert):
        self.dir = d
        self.ports = {"udp": free_port(), "tcp": free_port(), "tls": free_port()}
        self.pidfile = d / "rsyslogd.pid"
        self.conf = d / "rsyslog.conf"
        rules = "".join(f'ruleset(name="{t}") {{ action(type="omfile" file="{d}/{t}.log" template="t") }}\n'
                        for t in self.ports)
        self.conf.write_text(f"""\
global(workDirectory="{d}" maxMessageSize="64k"
       defaultNetstreamDriverCAFile="{ca_cert}" defaultNetstreamDriverCertFile="{cert[0]}"
       defaultNetstreamDriverKeyFile="{cert[1]}")
module(load="imudp")
module(load="imtcp")
template(name="t" type="string" string="{TEMPLATE}")
input(type="imudp" address="127.0.0.1" port="{self.ports['udp']}" ruleset="udp")
input(type="imtcp" address="127.0.0.1" port="{self.ports['tcp']}" ruleset="tcp")
input(type="imtcp" address="127.0.0.1" port="{self.ports['tls']}" ruleset="tls"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
{rules}""")
        self.proc = None

    def url(self, transport):
        return f"{transport}://127.0.0.1:{self.ports[transport]}"

    def start(self):
        self.proc = subprocess.Popen(["rsyslogd", "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def listening():
            for t in ("tcp", "tls"):
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", self.ports[t])):
                        return False
            return True
        assert _wait(listening), f"rsyslogd did not start: {self.stop()}"
        time.sleep(0.2)  # imudp binds with the others
        return self

    def stop(self):
        """SIGTERM (rsyslog writes out what it holds), wait; its output."""
        if self.proc is None:
            return ""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        self.proc = None
        return out

    def lines(self, transport):
        p = self.dir / f"{transport}.log"
        return p.read_text(errors="surrogateescape").splitlines() if p.exists() else []

    def messages(self, transport):
        """(severity, facility, msgid, {sd params}, msg) per received message."""
        out = []
        for line in self.lines(transport):
            sev, fac, msgid, sd, msg = line.split("\t", 4)
            out.append((sev, fac, msgid, parse_sd(sd), msg))
        return out

    def wait_for(self, transport, n, timeout=20):
        return _wait(lambda: len(self.lines(transport)) >= n, timeout)


@contextlib.contextmanager
def rsyslogd(d, ca=None, cert=None):
    """rsyslogd on three loopback ports (udp, tcp, tls) writing each to d/<transport>.log. Without ca/cert,
    a test CA and a server certificate for 127.0.0.1 are made in d."""
    if ca is None:
        ca = make_ca(d)
    if cert is None:
        cert = make_cert(d, ca)
    r = Rsyslog(d, ca[0], cert)
    r.ca = ca
    try:
        yield r.start()
    finally:
        r.stop()


def parse_sd(text):
    """RFC 5424 STRUCTURED-DATA of one element -> (SD-ID, {name: value}), values unescaped (\\" \\\\ \\])."""
    assert text.startswith("[") and text.endswith("]"), text
    i = text.index(" ")
    sd_id, params, pos = text[1:i], {}, i + 1
    while pos < len(text) - 1:
        eq = text.index('="', pos)
        name, pos, value = text[pos:eq], eq + 2, []
        while text[pos] != '"':
            if text[pos] == "\\" and text[pos + 1] in '"\\]':
                pos += 1
            value.append(text[pos])
            pos += 1
        params[name] = "".join(value)
        pos += 1
        assert text[pos] in " ]", text[pos:]
        pos += 1
    return sd_id, params
