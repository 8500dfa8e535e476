#!/usr/bin/python3
"""Print podman's default seccomp profile (containers-common's /usr/share/containers/seccomp.json, or FILE)
with bpf allowed under CAP_BPF and perf_event_open under CAP_PERFMON, as Docker's and containerd's default
profiles have allowed since 2022 (moby #43987, containerd #7301): containers-common still allows both only
under CAP_SYS_ADMIN, which the container then does not need.
    deploy/image/seccomp.py > deploy/image/seccomp.json"""

import json
import sys

RULES = [{"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_BPF"]}},
         {"names": ["perf_event_open"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_PERFMON"]}}]


def with_bpf(profile):
    """The profile with RULES added before its first rule that refuses bpf (seccomp takes the first match
    for a capability set that a rule includes; the refusal excludes CAP_SYS_ADMIN only)."""
    rules = profile["syscalls"]
    first_refusal = next(i for i, r in enumerate(rules) if "bpf" in r["names"] and r["action"] != "SCMP_ACT_ALLOW")
    return dict(profile, syscalls=rules[:first_refusal] + RULES + rules[first_refusal:])


def main():
    with open(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/containers/seccomp.json") as f:
        json.dump(with_bpf(json.load(f)), sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
