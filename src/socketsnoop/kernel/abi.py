"""The Python mirror of bpf/socketsnoop.h: every struct layout, enum and flag value, size, map and program
name that user space shares with the kernel program, defined here and nowhere else.

Each constant is the header's name without its `SS_` prefix (SS_EV_STATE -> EV_STATE). tests/unit/test_abi.py
reads the header and the compiled object's BTF and fails on any difference either way.
"""

import struct
from collections import namedtuple

COMM_LEN = 16

# sizes and limits
RING_BYTES = 4 << 20
SPARE_RING_BYTES = 1 << 20
MAX_OWNERS = 65536
MAX_LISTENERS = 8192
MAX_FILTER_VALUES = 1024
THREAD_SIZE = 16384
CONTEXT_LEVELS = 2
CGROUP_LEVELS = 32
DROP_REASONS = 256  # drop_reasons: a slot per reason value, the last one for every value past it
DROP_SLOTS = 3  # struct conn_record.drop_slots

# enum ss_event_type: struct event.type
EV_STATE, EV_RETRANSMIT, EV_RESET_SENT, EV_RESET_RECEIVED, EV_CONNECTION = 1, 2, 3, 4, 5
EV_DROP = 6  # a TCP packet dropped (--drops): its reason in the row's INO field

# enum ss_owner: struct event.owner, where pid/comm came from
OWNER_CURRENT, OWNER_SOCKET, OWNER_LISTENER, OWNER_NONE = 0, 1, 2, 3

# struct event.flags
F_OWNER_UNVERIFIED = 1
F_CGROUP_IN = 2  # the kernel's own, never in an event user space reads

# enum ss_counter: index into the per-CPU array `counters`
C_SEEN, C_FILTERED, C_SENT, C_LOST = 0, 1, 2, 3
C_SEEN_STATE, C_SEEN_RETRANSMIT, C_SEEN_RESET_SENT, C_SEEN_RESET_RECEIVED = 4, 5, 6, 7
C_RESCUED = 8
C_RECORDS, C_RECORDS_LOST, C_RECORDS_FILTERED, C_STORAGE_FAILED = 9, 10, 11, 12
C_SHED_STATE, C_SHED_RETRANSMIT, C_SHED_RESET_SENT, C_SHED_RESET_RECEIVED = 13, 14, 15, 16
C_SHED_DROP = 17
C_DROPS = 18  # TCP packets dropped with a reason, whether or not sent as events
C_MAX = 19
# the events shed (C_LOST) by kind: the name each kind has in the Totals line (shed_NAME=), the outputs' notice
# and the metric, as JSON names the event ("event")
SHED_KINDS = (("state_change", C_SHED_STATE), ("retransmit", C_SHED_RETRANSMIT), ("reset_sent", C_SHED_RESET_SENT),
              ("reset_received", C_SHED_RESET_RECEIVED), ("drop", C_SHED_DROP))

# enum ss_result: struct conn_record.result
RESULT_CLOSED, RESULT_RESET_SENT, RESULT_RESET_RECEIVED, RESULT_REFUSED, RESULT_TIMEOUT, RESULT_UNREACHABLE = (
    1, 2, 3, 4, 5, 6)
# enum ss_direction: struct conn_record.direction
DIR_UNKNOWN, DIR_OUT, DIR_IN = 0, 1, 2
# struct conn_record.flags
R_INCOMPLETE, R_STATES_CUT, R_OWNER_UNVERIFIED = 1, 2, 4
MAX_STATES = 16
MAX_SOCKETS_HASH = 1 << 20
RECORD_RING_BYTES = 4 << 20

# enum ss_addr_kind: struct filter_key.kind, and the kind in filter_ports' keys
ADDR_EITHER, ADDR_SRC, ADDR_DST, ADDR_EXCLUDE = 1, 2, 3, 4
# the value of an entry of filter_pids, filter_comms, filter_uids, filter_cgroups
FV_INCLUDE, FV_EXCLUDE = 1, 2

# filter switches (the read-only variable filter_flags)
FILT_PID, FILT_COMM, FILT_PORT, FILT_SPORT, FILT_DPORT = 1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 4
FILT_ADDR, FILT_SRC, FILT_DST, FILT_STATE = 1 << 5, 1 << 6, 1 << 7, 1 << 8
FILT_IPV4, FILT_IPV6, FILT_NO_RETRANSMIT, FILT_NO_RESET, FILT_SKIP_UNSPEC = (
    1 << 9, 1 << 10, 1 << 11, 1 << 12, 1 << 13)
FILT_X_PID, FILT_X_COMM, FILT_X_PORT, FILT_X_ADDR = 1 << 14, 1 << 15, 1 << 16, 1 << 17
FILT_UID, FILT_X_UID, FILT_CGROUP, FILT_X_CGROUP = 1 << 18, 1 << 19, 1 << 20, 1 << 21
FILT_FAILED = 1 << 22
# struct sock_state.flags beyond R_* (the kernel's own)
S_RESET_SENT, S_RESET_RECEIVED, S_OWNED = 16, 32, 64

# -- struct layouts: (struct, field names in order; pad fields are unnamed 'x') --------------------------

# struct event, 112 bytes
EVENT_FORMAT = "<QQQIBBBBB3xIHH16s16s16sB3xI4xQ"
EVENT = struct.Struct(EVENT_FORMAT)
Event = namedtuple(
    "Event",
    "ts_ns skaddr ino netns type oldstate newstate owner flags pid sport dport saddr daddr comm family uid cgroup",
)
# struct event as decoded: the identity fields (pid .. family, contiguous in C) left as one bytes object;
# the owner's uid and the socket's cgroup after them
ROW_FORMAT = "<QQQIBBBBB3x57s3xI4xQ"
ROW = struct.Struct(ROW_FORMAT)
Row = namedtuple("Row", "ts_ns skaddr ino netns type oldstate newstate owner flags ident uid cgroup")
RECORD = struct.Struct("<8x" + ROW_FORMAT[1:])  # behind a ring buffer record's 8-byte header
IDENT_FORMAT = "<IHH16s16s16sB"
IDENT_STRUCT = struct.Struct(IDENT_FORMAT)
Ident = namedtuple("Ident", "pid sport dport saddr daddr comm family")
IDENT_PID = struct.Struct("<I")  # the first identity field, the pid: read alone from the identity bytes
# the identity as its texts are made (logformat/base.py): (pid, sport, dport, the rest), and the rest (saddr, daddr,
# comm, family: what the connections of one process to one peer share) apart
assert IDENT_FORMAT.startswith("<IHH")
IDENT_HEAD = struct.Struct(f"<IHH{IDENT_STRUCT.size - 8}s")
IDENT_REST = struct.Struct("<" + IDENT_FORMAT[4:])

# struct conn_record, 176 bytes: one connection at its end
RECORD_FORMAT = "<QQQQQQQQQIIIIBBBBB3xIHH16s16s16sB7xI12s"
CONN_RECORD = struct.Struct(RECORD_FORMAT)
ConnRecordFields = namedtuple(
    "ConnRecordFields",
    "ts_ns skaddr start_ns handshake_ns bytes_sent bytes_received cgroup ino states netns retransmits rtt_us uid "
    "result direction nstates flags owner pid sport dport saddr daddr comm family drops drop_slots",
)

# struct conn_record as decoded: its identity fields (pid .. family) left as one bytes object, as for events
RECORD_ROW_FORMAT = "<QQQQQQQQQIIIIBBBBB3x57s7xI12s"
RECORD_ROW = struct.Struct(RECORD_ROW_FORMAT)
RecordRow = namedtuple(
    "RecordRow",
    "ts_ns skaddr start_ns handshake_ns bytes_sent bytes_received cgroup ino states netns retransmits rtt_us uid "
    "result direction nstates flags owner ident drops drop_slots",
)
RECORD_RECORD = struct.Struct("<8x" + RECORD_ROW_FORMAT[1:])  # behind a ring buffer record's 8-byte header

# struct drop_slot, SS_DROP_SLOTS of them in conn_record.drop_slots: (reason, count), count 0: unused
DROP_SLOT = struct.Struct("<HH")
DROP_SLOT_FIELDS = ("reason", "count")
# struct listen_drops: a listener's accept queue overflows (map listen_drops, by struct listen_key)
LISTEN_DROPS = struct.Struct("<QI4x24s")
LISTEN_DROPS_FIELDS = ("drops", "backlog", "owner")
U64_VALUE = struct.Struct("<Q")  # a per-CPU value of counters and drop_reasons
# struct owner
OWNER_STRUCT = struct.Struct("<II16s")
OWNER_FIELDS = ("pid", "uid", "comm")
# struct listen_key
LISTEN_KEY = struct.Struct("<IHBx16s")
LISTEN_KEY_FIELDS = ("netns", "port", "family", "addr")
# struct filter_key: prefixlen counts kind + family (16 bits) + address bits
FILTER_KEY = struct.Struct("<IBB16s2x")
FILTER_KEY_FIELDS = ("prefixlen", "kind", "family", "addr")
FILTER_KEY_PREFIX_BITS = 16
# filter_ports: a bitmap in u64 words (an array), bit (kind << PORT_KEY_KIND_SHIFT) | port; filter_pids' key: a pid
PORT_KEY_KIND_SHIFT = 16
PORT_BITMAP_WORDS = 5 << 10  # (ADDR_EXCLUDE + 1) << (PORT_KEY_KIND_SHIFT - 6)
U32_KEY = struct.Struct("<I")  # filter_pids, filter_uids, filter_ports, counters
U64_KEY = struct.Struct("<Q")  # filter_cgroups: a cgroup id
SOCK_KEY = struct.Struct("<Q")  # owners: the socket's kernel address

# struct name -> (struct.Struct, field names): what tests/unit/test_abi.py checks against the BTF
STRUCTS = {
    "event": (EVENT, Event._fields),
    "conn_record": (CONN_RECORD, ConnRecordFields._fields),
    "owner": (OWNER_STRUCT, OWNER_FIELDS),
    "listen_key": (LISTEN_KEY, LISTEN_KEY_FIELDS),
    "filter_key": (FILTER_KEY, FILTER_KEY_FIELDS),
    "drop_slot": (DROP_SLOT, DROP_SLOT_FIELDS),
    "listen_drops": (LISTEN_DROPS, LISTEN_DROPS_FIELDS),
}

# in-kernel metrics (bpf/metrics.h): what the kernel counts instead of sending (kernel_metrics), and the slots
# of metric_counts' one per-CPU element
KM_EVENTS, KM_RECORDS = 1, 2
M_EVENTS, M_CONNS, M_HISTOGRAMS, M_BOUNDS, M_HISTOGRAM_SLOTS = 0, 128, 3, 14, 16
M_DURATION, M_HANDSHAKE, M_RTT, M_SLOTS = 160, 176, 192, 208


def metric_bounds(histograms):
    """The read-only metric_bounds' bytes: each histogram's bucket bounds (None: none), the unused ones ~0."""
    flat = []
    for bounds in histograms or [()] * M_HISTOGRAMS:
        if len(bounds) > M_BOUNDS:
            raise ValueError(f"a histogram of {len(bounds)} buckets: the kernel keeps {M_BOUNDS} at most")
        flat += [*bounds, *[(1 << 64) - 1] * (M_BOUNDS - len(bounds))]
    return struct.pack(f"<{M_HISTOGRAMS * M_BOUNDS}Q", *flat)

# -- names in the object -----------------------------------------------------------------------------------

# maps
MAP_EVENTS = "events"
MAP_EVENTS_SPARE = "events_spare"
MAP_PERF_EVENTS = "perf_events"
MAP_COUNTERS = "counters"
MAP_OWNERS = "owners"
MAP_LISTENERS = "listeners"
MAP_FILTER_PIDS = "filter_pids"
MAP_FILTER_COMMS = "filter_comms"
MAP_FILTER_PORTS = "filter_ports"
MAP_FILTER_ADDRS = "filter_addrs"
MAP_FILTER_UIDS = "filter_uids"
MAP_FILTER_CGROUPS = "filter_cgroups"
MAP_CPU_STATES = "cpu_states"  # the kernel's own: user space never touches it
MAP_RECORDS = "records"
MAP_RECORDS_SPARE = "records_spare"
MAP_SOCK_STATES = "sock_states"
MAP_SOCK_STATES_HASH = "sock_states_hash"
MAP_METRIC_COUNTS = "metric_counts"
MAP_DROP_REASONS = "drop_reasons"
MAP_LISTEN_DROPS = "listen_drops"
MAP_READER_AWAKE = "reader_awake"  # user space writes it through a mapping: 1 while the reader is awake
MAPS = (MAP_EVENTS, MAP_EVENTS_SPARE, MAP_PERF_EVENTS, MAP_COUNTERS, MAP_OWNERS, MAP_LISTENERS,
        MAP_FILTER_PIDS, MAP_FILTER_COMMS, MAP_FILTER_PORTS, MAP_FILTER_ADDRS, MAP_FILTER_UIDS, MAP_FILTER_CGROUPS,
        MAP_CPU_STATES, MAP_RECORDS, MAP_RECORDS_SPARE, MAP_SOCK_STATES, MAP_SOCK_STATES_HASH, MAP_METRIC_COUNTS,
        MAP_DROP_REASONS, MAP_LISTEN_DROPS, MAP_READER_AWAKE)

# read-only variables set before load: name -> struct format
RODATA = {"filter_flags": "<I", "filter_states": "<I", "wakeup_bytes": "<Q", "use_perf": "<?",
          "use_hash_storage": "<?", "summary_only": "<?", "no_records": "<?", "cgroup_levels": "<I",
          "want_cgroup": "<?", "kernel_metrics": "<I", "metric_bounds": f"<{M_HISTOGRAMS * M_BOUNDS}Q",
          "drop_events": "<?", "drop_rx_sk": "<?"}

# programs -> tracepoint, in attach order, which matters: on_state_change before on_state_change_missed
# (the BPF source's RE-ENTRY comment). The first two are required, the others optional (a kernel that
# lacks the tracepoint loses those events, with a warning).
PROGRAMS = {
    "on_state_change": "sock:inet_sock_set_state",
    "on_state_change_missed": "sock:inet_sock_set_state",
    "on_retransmit": "tcp:tcp_retransmit_skb",
    "on_synack_retransmit": "tcp:tcp_retransmit_synack",
    "on_reset_sent": "tcp:tcp_send_reset",
    "on_reset_received": "tcp:tcp_receive_reset",
    "on_error_report": "sock:inet_sk_error_report",
}
REQUIRED = ("on_state_change", "on_state_change_missed")

# fentry programs -> the kernel function each attaches to. They take the resets sent that tcp_send_reset
# does not trace before Linux 6.10 (none for a closed port, a timewait or a request socket); the loader
# loads them only there, and only where the kernel allows fentry (kernel/loader.py: reset_coverage).
FENTRY_PROGRAMS = {
    "on_reset_sent_v4": "tcp_v4_send_reset",
    "on_reset_sent_v6": "tcp_v6_send_reset",
}

# the drop reasons' program -> its tracepoint: loaded only where the tracepoint passes the reason (Linux 5.17+;
# kernel/loader.py: drop_support); its fourth argument, rx_sk, where the BTF shows it (Linux 6.11+)
DROP_PROGRAMS = {"on_kfree_skb": "skb:kfree_skb"}

# -- the kernel's own layouts: NETLINK_SOCK_DIAG (kernel/sockdiag.py), as `ss` asks for listening sockets --------
NLMSGHDR = struct.Struct("=IHHII")  # struct nlmsghdr: len, type, flags, seq, pid
INET_DIAG_REQ_V2 = struct.Struct("=BBBxI48x")  # struct inet_diag_req_v2: family, protocol, ext, states, a zero id
# struct inet_diag_msg: family, state, timer, retrans, sport and dport (big-endian), src, dst, if, cookie,
# expires, rqueue, wqueue, uid, inode
INET_DIAG_MSG = struct.Struct("=BBBB2s2s16s16sI8sIIIII")
RTATTR = struct.Struct("=HH")  # struct rtattr: len, type
U32_NATIVE = struct.Struct("=I")  # an element of INET_DIAG_SKMEMINFO's array
