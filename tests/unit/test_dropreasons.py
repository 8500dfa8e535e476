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


def test_drop_events_carry_their_reason_in_every_form():
    """--drops: the text and JSON lines, and the journal's and syslog's fields (dicts, or encoded), end with the
    reason's name; a value the kernel does not name is its number."""
    from socketsnoop.kernel.abi import EV_DROP
    from socketsnoop.logformat.base import Clock
    from socketsnoop.logformat.fields import FieldsEncoder, FieldsFormatter
    from socketsnoop.logformat.jsonline import JsonFormatter
    from socketsnoop.logformat.text import TextFormatter
    from socketsnoop.pipeline.decode import make_row
    value = next((v for v, n in dropreasons.reason_names().items() if n == "NO_SOCKET"), None)
    if value is None:
        pytest.skip("this kernel names no NO_SOCKET")
    rows = [make_row(type=EV_DROP, ino=value, pid=0, sport=80, dport=5000), make_row(type=EV_DROP, ino=65000),
            make_row(type=1, ino=value)]
    text = TextFormatter(Clock()).show_drops().lines(rows)
    assert text[0].endswith(" REASON=NO_SOCKET\n") and text[1].endswith(" REASON=65000\n")
    assert "Packet Drop: SRC=" in text[0] and "REASON" not in text[2]
    js = JsonFormatter(Clock()).show_drops().lines(rows)
    assert js[0].endswith(',"reason":"NO_SOCKET"}\n') and '"event":"drop"' in js[0] and "reason" not in js[2]
    fields = FieldsFormatter(Clock()).show_drops().fields(rows)
    assert fields[0]["event"] == "drop" and fields[0]["reason"] == "NO_SOCKET" and "reason" not in fields[2]
    encoded = FieldsEncoder(Clock(), lambda k, v: f"{k}={v}".encode(), b"\n").show_drops().encode(rows)
    assert encoded[0][2].endswith(b"\nreason=NO_SOCKET") and b"reason" not in encoded[2][2]
    assert TextFormatter(Clock()).lines(rows)[0].endswith("STATE=No Socket\n")  # without --drops: as any line
