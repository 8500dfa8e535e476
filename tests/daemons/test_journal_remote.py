"""The journal across hosts: a monitor writes to a journald (--journal-socket, a namespace of its own),
Debian's systemd-journal-upload sends that journal over HTTPS to systemd-journal-remote (the uploader checks
the central certificate against a test CA; Debian 12's journal-remote is built without GnuTLS and cannot
check the uploader's: "Option --trust is not available"), and the central journal file holds every event
with its SOCKETSNOOP_* fields, queryable with journalctl --file. The commands are the ones
docs/packaging.md gives."""

import glob
import json
import os
import subprocess

import pytest

from support.collectors import _certtool, _wait, journald, make_ca, make_cert
from support.net import free_port
from support.procs import conversation

REMOTE = "/lib/systemd/systemd-journal-remote"
UPLOAD = "/lib/systemd/systemd-journal-upload"

pytestmark = [pytest.mark.bpf,
              pytest.mark.skipif(not os.path.exists(REMOTE) or not os.path.exists(UPLOAD),
                                 reason="systemd-journal-remote is not installed (tests/run installs it)")]


def client_cert(d, ca, name):
    """A TLS client certificate (journal-upload's), signed by ca."""
    key, cert, tmpl = d / f"{name}-key.pem", d / f"{name}.pem", d / f"{name}.tmpl"
    _certtool("--generate-privkey", "--key-type=ecdsa", "--outfile", str(key))
    tmpl.write_text(f'cn = "{name}"\ntls_www_client\nsigning_key\nexpiration_days = 2\n')
    _certtool("--generate-certificate", "--load-privkey", str(key), "--load-ca-certificate", str(ca[0]),
              "--load-ca-privkey", str(ca[1]), "--template", str(tmpl), "--outfile", str(cert))
    return cert, key


def central_entries(directory, *matches):
    out = []
    for f in sorted(glob.glob(os.path.join(directory, "*.journal"))):
        r = subprocess.run(["journalctl", f"--file={f}", "-o", "json", "--no-pager", "--all", *matches],
                           capture_output=True, text=True, timeout=60)
        out += [json.loads(line) for line in r.stdout.splitlines()]
    return out


def test_upload_to_journal_remote(monitor, tmp_path):
    ca = make_ca(tmp_path)
    server = make_cert(tmp_path, ca, "central")
    client = client_cert(tmp_path, ca, "host1")
    central = tmp_path / "central"
    central.mkdir()
    https = free_port()
    remote = subprocess.Popen([REMOTE, f"--listen-https=127.0.0.1:{https}", f"--output={central}",
                               f"--key={server[1]}", f"--cert={server[0]}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        port = free_port()
        with journald() as j:
            m = monitor("-P", str(port), "-q", "--no-report", "--journal-socket", j.socket)
            spid, cpid = conversation("127.0.0.1", port, "ss-jrsrv", "ss-jrcli")
            m.stop()
            local = f"SOCKETSNOOP_DPORT={port}"
            assert _wait(lambda: j.entries(local), timeout=20), m.stderr
            [directory] = glob.glob(f"/var/log/journal/*.{j.name}") + glob.glob(f"/run/log/journal/*.{j.name}")
            up = subprocess.run([UPLOAD, f"--url=https://127.0.0.1:{https}", f"--directory={directory}",
                                 "--follow=no", f"--save-state={tmp_path / 'upload-state'}", f"--key={client[1]}",
                                 f"--cert={client[0]}", f"--trust={ca[0]}"], capture_output=True, text=True,
                                timeout=120)
            assert up.returncode == 0, up.stderr
            sent = j.entries(local)
        assert _wait(lambda: len(central_entries(central, local)) == len(sent), timeout=20), (
            len(sent), len(central_entries(central, local)))
    finally:
        remote.terminate()
        out = remote.communicate(timeout=30)[0]
    got = central_entries(central, local, "SYSLOG_IDENTIFIER=socket-snoop")
    assert [e["MESSAGE"] for e in got] == [e["MESSAGE"] for e in sent], out
    client_side = central_entries(central, local, "SOCKETSNOOP_COMM=ss-jrcli")
    assert client_side and all(e["SOCKETSNOOP_PID"] == str(cpid) for e in client_side)
    assert {e["SOCKETSNOOP_NEW_STATE"] for e in client_side} >= {"SYN_SENT", "ESTABLISHED", "CLOSE"}
    assert central_entries(central, f"SOCKETSNOOP_SPORT={port}", f"SOCKETSNOOP_PID={spid}")
