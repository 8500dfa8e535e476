"""The drop reasons' names come from the running kernel's BTF (enum skb_drop_reason), not from a table: checked
against bpftool's own reading of the same BTF, value by value."""

import os
import re
import shutil
import subprocess

import pytest
from socketsnoop.kernel import dropreasons

VMLINUX = "/sys/kernel/btf/vmlinux"


def bpftool_enum(name):
    """{value: member name} of an enum of the kernel's BTF, as bpftool reads it."""
    out = subprocess.run(["bpftool", "btf", "dump", "file", VMLINUX, "format", "raw"], capture_output=True,
                         text=True, check=True).stdout
    head = re.search(rf"^\[\d+\] ENUM '{name}' .*vlen=(\d+)$", out, flags=re.M)
    assert head, f"no enum {name} in the kernel's BTF"
    members = out[head.end():].splitlines()[1:int(head[1]) + 1]
    return {int(v): n for n, v in (re.fullmatch(r"\s+'(\w+)' val=(-?\d+)", m).groups() for m in members)}


@pytest.mark.skipif(not os.path.exists(VMLINUX) or not shutil.which("bpftool"), reason="no kernel BTF or bpftool")
def test_names_are_the_running_kernels():
    theirs = bpftool_enum("skb_drop_reason")
    mine = dropreasons.reason_names()
    assert len(mine) >= 0.9 * len(theirs) and len(mine) > 20
    for value, name in mine.items():
        assert theirs[value].endswith("_" + name), (value, name, theirs[value])
    by_name = {n: v for v, n in mine.items()}
    assert theirs[by_name["TCP_LISTEN_OVERFLOW"]] == "SKB_DROP_REASON_TCP_LISTEN_OVERFLOW"
    assert theirs[by_name["NETFILTER_DROP"]] == "SKB_DROP_REASON_NETFILTER_DROP"
    assert dropreasons.reason_name(by_name["NO_SOCKET"]) == "NO_SOCKET"
    assert dropreasons.reason_name(65000) == "65000"  # a value this kernel does not name: its number


def test_a_record_line_names_its_most_frequent_reason():
    from socketsnoop.logformat.words import drop_words
    from socketsnoop.pipeline.decode import make_record_row, R_DROP_SLOTS, R_DROPS
    names = {n: v for v, n in dropreasons.reason_names().items()}
    if "NETFILTER_DROP" not in names:
        pytest.skip("this kernel names no NETFILTER_DROP")
    row = make_record_row(drop_slots=((names["NO_SOCKET"], 2), (names["NETFILTER_DROP"], 5), (65000, 1)))
    assert row[R_DROPS] == 8
    assert drop_words(row[R_DROPS], row[R_DROP_SLOTS]) == " DROPS=8 DROP_REASON=NETFILTER_DROP"
