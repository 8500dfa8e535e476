"""The DaemonSet manifest (deploy/kubernetes/) read, and turned into the `podman run` that gives the image the
same settings: host PID and network, the capabilities dropped and added, the read-only root, no privilege
escalation, the seccomp profile, the hostPath mounts, the memory and CPU limits, the arguments. The image test
runs exactly that, so the manifest is what was tested."""

import json
import os
import subprocess

from debroot import ROOT

MANIFEST = os.path.join(ROOT, "deploy", "kubernetes", "socket-snoop-daemonset.yaml")
# podman's default profile plus what containerd's RuntimeDefault allows (bpf under CAP_BPF, perf_event_open
# under CAP_PERFMON): deploy/image/seccomp.py
SECCOMP = os.path.join(ROOT, "deploy", "image", "seccomp.json")


def load_manifest(path=MANIFEST):
    """The YAML, through Debian's python3-yaml (the tests' venv has no YAML parser)."""
    code = "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)"
    out = subprocess.run(["/usr/bin/python3", "-c", code, path], capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def container(manifest):
    [c] = manifest["spec"]["template"]["spec"]["containers"]
    return c


def podman_base():
    """podman as it works on this host: runc where cgroups are hybrid (crun refuses a v2 hierarchy with
    controllers beside v1)."""
    argv = ["podman"]
    if os.path.exists("/sys/fs/cgroup/unified") and os.path.exists("/usr/sbin/runc"):
        argv += ["--runtime", "/usr/sbin/runc"]
    return argv


def _quantity(q):
    """A Kubernetes memory quantity (Mi, Gi) in bytes."""
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    return int(q[:-2]) * units[q[-2:]] if q[-2:] in units else int(q)


def run_options(manifest):
    """`podman run` options equivalent to the manifest's pod and container settings (the image and its
    arguments excluded). Every setting of the manifest that podman has is turned into one; the others
    (tolerations, probe, annotations) are the test's to check."""
    pod = manifest["spec"]["template"]["spec"]
    c = container(manifest)
    sc = c["securityContext"]
    opts = []
    if pod.get("hostPID"):
        opts.append("--pid=host")
    if pod.get("hostNetwork"):
        opts.append("--network=host")
    assert not sc.get("privileged"), "privileged"
    opts += [f"--cap-drop={d.lower()}" for d in sc["capabilities"].get("drop", [])]
    opts += [f"--cap-add=CAP_{a}" for a in sc["capabilities"].get("add", [])]
    if sc.get("readOnlyRootFilesystem"):
        opts += ["--read-only", "--read-only-tmpfs=false"]  # no tmpfs on /tmp, /run: the pod has none
    if sc.get("allowPrivilegeEscalation") is False:
        opts += ["--security-opt", "no-new-privileges"]
    if "runAsUser" in sc:
        opts += ["--user", str(sc["runAsUser"])]
    assert sc["seccompProfile"]["type"] == "RuntimeDefault", sc["seccompProfile"]
    opts += ["--security-opt", f"seccomp={SECCOMP}"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for m in c.get("volumeMounts", []):
        host = volumes[m["name"]]["hostPath"]["path"]
        opts += ["-v", f"{host}:{m['mountPath']}" + (":ro" if m.get("readOnly") else "")]
    limits = c["resources"]["limits"]
    opts += [f"--memory={_quantity(limits['memory'])}", f"--cpus={limits['cpu']}"]
    return opts
