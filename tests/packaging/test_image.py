"""The container image (`make image`) run by podman with the DaemonSet manifest's settings (podrun.py): the
host's PID and network namespaces, capabilities BPF, PERFMON, DAC_READ_SEARCH and SYS_PTRACE and no other,
read-only root, the cgroup mount, the memory limit, JSON on stdout and metrics behind the readiness probe's
URL. The containerized monitor names a host connection by the host's PID and COMM (a listener of another
user's, older than the monitor, by its owner: read from /proc/PID/fd), and a connection made in another
podman container by that container's id."""

import json
import os
import signal
import subprocess
import time
import urllib.request

import pytest

from debroot import ROOT, pyproject_version, tools_missing
from podrun import SECCOMP, container, load_manifest, podman_base, run_options
from support.cgroups import cgroup2_mount
from support.net import free_port
from support.procs import CLIENT, run_client, start_server
from support.system import READY

NOBODY = 65534
# what runs on Kubernetes nodes with cgroup v2 (containerd): a cgroup namespace of the container's own
K8S_LIKE = ["--cgroupns=private"]
# podman's default nofile and nproc are above this host's hard limits
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


@pytest.fixture(scope="session")
def image():
    reason = tools_missing("make", "dpkg-buildpackage", "mmdebstrap", "podman", "python3")
    if reason:
        pytest.skip(reason)
    p = subprocess.run(["make", "image"], cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    return f"localhost/socket-snoop:{pyproject_version()}"


def metrics_arg(args, port):
    """The manifest's arguments with the --metrics port replaced by PORT (a free one on this shared host)."""
    i = args.index("--metrics")
    return args[:i + 1] + [args[i + 1].rsplit(":", 1)[0] + f":{port}"] + args[i + 2:]


def test_manifest():
    """What the manifest promises beside the run: every node, JSON on stdout, scrape annotations that name
    the probed metrics port, limits, the image this tree builds."""
    m = load_manifest()
    pod = m["spec"]["template"]["spec"]
    c = container(m)
    assert m["kind"] == "DaemonSet" and {"operator": "Exists"} in pod["tolerations"]
    assert pod["hostPID"] and pod["hostNetwork"] and not pod.get("automountServiceAccountToken", True)
    assert c["image"] == f"localhost/socket-snoop:{pyproject_version()}"
    assert c["args"][:3] == ["--json", "--no-log-file", "--no-report"]
    [port] = c["ports"]
    address = c["args"][c["args"].index("--metrics") + 1]
    annotations = m["spec"]["template"]["metadata"]["annotations"]
    assert address == f"0.0.0.0:{port['containerPort']}" and annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port["containerPort"])
    probe = c["readinessProbe"]["httpGet"]
    assert probe["port"] == port["name"] and probe["path"] == annotations["prometheus.io/path"] == "/metrics"
    assert set(c["resources"]) == {"requests", "limits"}
    sc = c["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["BPF", "PERFMON", "DAC_READ_SEARCH", "SYS_PTRACE"]}
    assert sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False and not sc["privileged"]


def test_seccomp_profile_is_podmans_plus_bpf():
    """deploy/image/seccomp.json is this host's podman default with the two rules added (not stale)."""
    default = "/usr/share/containers/seccomp.json"
    if not os.path.exists(default):
        pytest.skip("no containers-common profile here")
    out = subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "deploy", "image", "seccomp.py"), default],
                         capture_output=True, text=True, check=True).stdout
    with open(SECCOMP) as f:
        assert f.read() == out


def _pod_client(image, port, cidfile):
    """A client in a container of its own (the image's python3), named ss-podcli; it waits for a line on
    stdin, and stays a second past its connection (a cgroup removed before the monitor has read its first
    event cannot be named)."""
    code = CLIENT.format(comm=b"ss-podcli", host="127.0.0.1", port=port, count=1, size=10, timeout=20)
    code = "import sys; sys.stdin.readline()\n" + code + "time.sleep(1)\n"
    argv = podman_base() + ["run", "-i", "--rm", "--network=host", "--cidfile", str(cidfile), *ULIMITS,
                            "--entrypoint", "/usr/bin/python3", image, "-c", code]
    return subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_cgroup(pod, cidfile):
    """The container's id, once its cgroup exists."""
    mount = cgroup2_mount()
    for _ in range(600):
        cid = cidfile.read_text().strip() if cidfile.exists() else ""
        if len(cid) == 64 and any(cid in d for _top, dirs, _files in os.walk(mount) for d in dirs):
            return cid
        assert pod.poll() is None, pod.communicate()
        time.sleep(0.05)
    raise AssertionError(f"no cgroup for container {cid!r}")


def _start(argv):
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    head = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = p.stderr.readline()
        head.append(line)
        if not line or line.startswith(READY):
            break
    if not head[-1].startswith(READY):
        p.kill()
        raise AssertionError("the container's monitor never became ready:\n" + "".join(head) + p.stderr.read())
    return p


@pytest.mark.bpf
def test_image_as_the_daemonset_runs_it(image, tmp_path):
    m = load_manifest()
    port, metrics = free_port(), free_port()
    args = metrics_arg(container(m)["args"], metrics) + ["-P", str(port), "--no-summary"]
    name = f"ss-img-{os.getpid()}"
    argv = podman_base() + ["run", "--rm", "--name", name, *ULIMITS, *K8S_LIKE, *run_options(m), image, *args]
    srv = start_server("127.0.0.1", port, "ss-imgsrv", count=2, uid=NOBODY)  # older than the monitor
    mon = pod = None
    try:
        mon = _start(argv)
        probe = container(m)["readinessProbe"]["httpGet"]
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}{probe['path']}", timeout=10) as r:
            assert r.status == 200 and b"socketsnoop_" in r.read()
        cpid, out = run_client("127.0.0.1", port, "ss-imgcli")
        assert "ok:" in out
        cidfile = tmp_path / "cid"
        pod = _pod_client(image, port, cidfile)
        cid = _wait_cgroup(pod, cidfile)
        # the monitor walks the cgroup tree for an unknown id at most once a second: a connection within a
        # second of a walk made before the container's cgroup existed would not be named (identity.py)
        time.sleep(1.2)
        pod_out, pod_err = pod.communicate("go\n", timeout=120)
        assert pod.returncode == 0 and "ok:" in pod_out, pod_err
        srv.communicate(timeout=30)
        time.sleep(0.5)
        mon.send_signal(signal.SIGINT)
        out, err = mon.communicate(timeout=60)
        assert mon.returncode == 0, err
    finally:
        for p in (srv, mon, pod):
            if p is not None and p.poll() is None:
                p.kill()
                p.communicate()
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, timeout=60)
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    host = [r for r in records if r["comm"] == "ss-imgcli"]
    assert host and all(r["pid"] == cpid for r in host), records
    served = [r for r in records if r["sport"] == port]
    assert served and all(r["pid"] == srv.pid and r["comm"] == "ss-imgsrv" for r in served), records
    in_pod = [r for r in records if r["comm"] == "ss-podcli"]
    assert in_pod and all(r.get("container") == cid for r in in_pod), (cid, [(r["new_state"], r.get("cgroup"),
                                                                              r.get("container")) for r in in_pod])
