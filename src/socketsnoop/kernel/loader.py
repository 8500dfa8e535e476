"""The kernel side: check the host, load and attach the BPF program, read its counters.

The compiled CO-RE object ships in the package (bpf/socketsnoop.bpf.o), so
nothing is compiled on the host; libbpf relocates it against the running
kernel's BTF.
"""

import os
import platform
import re
import struct
import threading
from importlib import resources

from ..errors import SnoopError
from . import abi
from .abi import C_MAX, C_RESCUED, CONN_RECORD, EVENT, FENTRY_PROGRAMS, LISTEN_KEY, OWNER_STRUCT, PROGRAMS, REQUIRED
from .bpfobject import BpfObject
from .dropreasons import drop_reasons_text, drop_support, read_drop_reasons, read_listen_drops
from .libbpf import BTF_KIND_FUNC, Btf, Libbpf, fentry_works, possible_cpus
from .perfbuf import PerfBuffer
from .ringbuf import RingBuffer

BTF_PATH = "/sys/kernel/btf/vmlinux"
# The one architecture socket-snoop runs on: its BPF object is built for x86-64 (-D__TARGET_ARCH_x86, and
# context_level() knows x86-64's stacks), and ringbuf.py reads the rings' positions with plain loads and
# stores, which x86-64's memory ordering makes safe (arm64 would need acquire/release).
MACHINE = "x86_64"
CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39

# How the resets this kernel sends are seen (Probe.resets; `socket-snoop check` says which):
RESETS_TRACEPOINT = "tracepoint"  # tcp_send_reset fires for every one (Linux 6.10+)
RESETS_FENTRY = "fentry"  # before 6.10: tcp_send_reset for full sockets, the fentry programs for the rest
RESETS_PARTIAL = "partial"  # before 6.10 without fentry: those of full sockets only
# tcp_send_reset's arguments (sk, skb) gained a third, the reason, when it began to fire for every reset
RESET_TP_FULL_ARGS = 3
RESET_TP_FULL_KERNEL = (6, 10)


def kernel_version(release=None):
    m = re.match(r"(\d+)\.(\d+)", release or os.uname().release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def reset_coverage():
    """(mode, why) for the resets this kernel sends: RESETS_TRACEPOINT where tcp_send_reset traces them all
    (known by its arguments in the kernel's BTF, or else by the version); before, RESETS_FENTRY where the
    kernel has the two send functions in its BTF and lets an fentry program attach (tried for real with an
    empty one: needs privileges), else RESETS_PARTIAL and why."""
    with Btf() as btf:
        args = btf.tracepoint_args("tcp_send_reset")
        full = args >= RESET_TP_FULL_ARGS if args is not None else kernel_version() >= RESET_TP_FULL_KERNEL
        if full:
            return RESETS_TRACEPOINT, ""
        ids = {func: btf.find(func, BTF_KIND_FUNC) for func in FENTRY_PROGRAMS.values()}
    missing = [func for func, tid in ids.items() if tid is None]
    if missing:
        return RESETS_PARTIAL, f"the kernel's BTF has no function {missing[0]} to attach to"
    for func, tid in ids.items():
        ok, why = fentry_works(tid)
        if not ok:
            return RESETS_PARTIAL, f"the kernel refuses fentry programs on {func} ({why})"
    return RESETS_FENTRY, ""


def reset_coverage_text(mode, why=""):
    """One line for `socket-snoop check` and the monitor's warning."""
    if mode == RESETS_TRACEPOINT:
        return "every one, by the tracepoint tcp_send_reset (Linux 6.10+)"
    if mode == RESETS_FENTRY:
        return ("those of full sockets by the tracepoint tcp_send_reset, the others (to a closed port, from "
                "timewait and request sockets: the tracepoint lacks them before Linux 6.10) by fentry on "
                + " and ".join(FENTRY_PROGRAMS.values()))
    return ("only those of full sockets (tcp_send_reset before Linux 6.10): resets sent to a closed port or "
            f"from timewait and request sockets are not reported; {why}")


def object_bytes() -> bytes:
    """The compiled program shipped in the package; SOCKETSNOOP_BPF_OBJECT names another (for developers:
    try a rebuilt or deliberately broken object, e.g. in the kernel matrix, without reinstalling)."""
    other = os.environ.get("SOCKETSNOOP_BPF_OBJECT")
    if other:
        try:
            with open(other, "rb") as f:
                return f.read()
        except OSError as e:
            raise SnoopError(f"socket-snoop: SOCKETSNOOP_BPF_OBJECT={other}: {e.strerror}") from None
    return resources.files("socketsnoop.kernel").joinpath("bpf/socketsnoop.bpf.o").read_bytes()


def effective_caps(status_path="/proc/self/status") -> int:
    try:
        with open(status_path) as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def has_bpf_caps(caps=None) -> bool:
    caps = effective_caps() if caps is None else caps
    return bool(caps & (1 << CAP_SYS_ADMIN)) or (bool(caps & (1 << CAP_BPF)) and bool(caps & (1 << CAP_PERFMON)))


def architecture_problem():
    """None on x86-64; else, in one line, why socket-snoop cannot run on this machine."""
    machine = platform.machine()
    if machine == MACHINE:
        return None
    return (f"this machine is {machine or 'of an unknown architecture'}: socket-snoop runs on {MACHINE} only "
            "(its BPF program is built for x86-64, and its ring buffer reader relies on x86-64 memory ordering)")


def preflight():
    """The checks whose failure a person can fix, each as one clear line."""
    problem = architecture_problem()
    if problem:
        raise SnoopError(f"socket-snoop: {problem}")
    if not has_bpf_caps():
        raise SnoopError("socket-snoop: needs root (or the capabilities CAP_BPF and CAP_PERFMON): "
                         "run it with sudo")
    if not os.path.exists(BTF_PATH):
        raise SnoopError(f"socket-snoop: this kernel has no BTF ({BTF_PATH} is missing): "
                         "a kernel built with CONFIG_DEBUG_INFO_BTF=y is needed (Debian 11+, Ubuntu 20.10+, "
                         "RHEL 8.2+ kernels have it)")
    Libbpf.get()


def _pow2_at_least(n, floor=4096):
    size = floor
    while size < n:
        size <<= 1
    return size


class Probe:
    """Loaded and attached kernel program; close() detaches it."""

    def __init__(self, filters, buffer="ringbuf", buffer_size=32 << 20, wakeup_bytes=64 << 10, log=None,
                 records=True, summary_only=False, record_buffer_size=None, want_cgroup=True, kernel_metrics=0,
                 metric_bounds=None, drop_events=False):
        self.filters = filters
        # counting without transfer (bpf/metrics.h): what the kernel counts instead of sending (abi.KM_*), and
        # each histogram's bucket bounds
        self.kernel_metrics, self.metric_bounds = kernel_metrics, metric_bounds
        self.lock = threading.Lock()  # metric_counts() runs in the metrics endpoint's thread: not past close()
        self.want_cgroup = want_cgroup  # False: events carry no cgroup id (no output shows it), a few reads less
        self.buffer = buffer
        self.records = records and buffer != "perf"  # the perf buffer carries events only
        self.summary_only = summary_only
        records_only = (summary_only and self.records) or bool(kernel_metrics & abi.KM_EVENTS)
        size = _pow2_at_least(buffer_size)
        # --summary-only: the kernel writes no events, so their rings are as small as a ring may be (each
        # ring's pages are all mapped at start, hence resident: they count in full in the monitor's RSS)
        self.buffer_size = 1 << 16 if records_only else size
        self.spare_size = max(self.buffer_size // 8, 1 << 16)  # the spare ring: rare events, and rescue
        # connection records: one per connection against ~5 events, each 184 bytes against 120; 2 records
        # against 6 events per connection when a burst of them close at once, 1 against 2 for a refused
        # connect. The overload policy (a reader behind sheds event lines first, never a record) needs the
        # records' ring to fill last whatever the mix: as large as the events' ring
        self.record_size = 1 << 16 if kernel_metrics & abi.KM_RECORDS else \
            _pow2_at_least(record_buffer_size or size, 1 << 16)
        self.record_spare_size = max(self.record_size // 8, 1 << 16)
        self.hash_storage = False  # socket state in a hash, not socket storage: kernels before 5.11
        # the reader is woken when this much is unread: often enough that each of its turns on a CPU is
        # short (at full churn the workload kept 5% more of its rate at 64K than at 256K, the monitor in
        # a scheduling group of its own, as a service is), seldom enough to read in batches
        self.wakeup_bytes = min(wakeup_bytes, self.buffer_size // 4)
        self.log = log or (lambda msg: None)
        self.obj = None
        self.reader = None
        self.spare_reader = None  # the spare ring (RE-ENTRY, 2 in the BPF source)
        self.record_reader = None  # connection records, and their spare ring
        self.record_spare_reader = None
        self.skipped = []  # tracepoints this kernel lacks
        self.resets, self.resets_why = RESETS_TRACEPOINT, ""  # how resets sent are seen (load() finds out)
        self.ncpus = 1
        self.drop_events = drop_events  # --drops: each TCP drop as an event (else only counted)
        self.drops = False  # the drops' program is loaded (the kernel passes kfree_skb's reason: 5.17+)
        self.drop_rx_sk = False  # and the receiving socket (6.11+)

    # -- loading -------------------------------------------------------------
    def _open(self, disabled):
        obj = BpfObject(object_bytes())
        f = self.filters
        # the kernel counts the mark per CPU (what each wrote since it last woke the reader): as many wake-ups
        # as one mark for all (each costs the writer an interrupt), while all CPUs' marks fit in a quarter
        # of the ring, which the reader then finds unread at worst
        per_cpu_mark = min(self.wakeup_bytes, max(self.buffer_size // 4 // (os.cpu_count() or 1), 1))
        values = {"filter_flags": f.flags(), "filter_states": f.state_mask(), "wakeup_bytes": per_cpu_mark,
                  "use_perf": self.buffer == "perf", "use_hash_storage": self.hash_storage,
                  "summary_only": self.summary_only, "no_records": not self.records,
                  "cgroup_levels": f.cgroup_levels(), "want_cgroup": self.want_cgroup,
                  "kernel_metrics": self.kernel_metrics, "metric_bounds": abi.metric_bounds(self.metric_bounds),
                  "drop_events": self.drop_events and self.drops, "drop_rx_sk": self.drop_rx_sk}
        obj.set_rodata({name: values[name] if isinstance(values[name], bytes) else struct.pack(fmt, values[name])
                        for name, fmt in abi.RODATA.items()})
        if self.buffer == "perf":
            obj.set_autocreate(abi.MAP_EVENTS, False)  # unused: kernels before 5.8 have no ring buffer
            obj.set_autocreate(abi.MAP_EVENTS_SPARE, False)
        else:
            obj.set_max_entries(abi.MAP_EVENTS, self.buffer_size)
            obj.set_max_entries(abi.MAP_EVENTS_SPARE, self.spare_size)
        if self.records:
            obj.set_max_entries(abi.MAP_RECORDS, self.record_size)
            obj.set_max_entries(abi.MAP_RECORDS_SPARE, self.record_spare_size)
        else:
            obj.set_autocreate(abi.MAP_RECORDS, False)
            obj.set_autocreate(abi.MAP_RECORDS_SPARE, False)
        if not self.drops:
            obj.set_autoload(*abi.DROP_PROGRAMS, False)
        for prog in disabled:  # (an object from SOCKETSNOOP_BPF_OBJECT may lack one)
            obj.set_autoload(prog, False)
        return obj

    def _no_fentry(self, why):
        """The fentry programs cannot be used after all: resets without a full socket are not seen."""
        self.resets, self.resets_why = RESETS_PARTIAL, why
        self.log(f"socket-snoop: warning: resets sent: {reset_coverage_text(self.resets, why)}")

    def load(self):
        preflight()
        self.resets, self.resets_why = reset_coverage()
        if self.resets == RESETS_PARTIAL:
            self._no_fentry(self.resets_why)
        disabled = [] if self.resets == RESETS_FENTRY else list(FENTRY_PROGRAMS)
        self.drops, self.drop_rx_sk = drop_support()
        if not self.drops and self.drop_events:
            self.log(f"socket-snoop: warning: --drops: {drop_reasons_text(False)}")
        while True:
            obj = self._open(disabled)
            if not disabled and not all(obj.has_program(p) for p in FENTRY_PROGRAMS):
                disabled += list(FENTRY_PROGRAMS)
                self._no_fentry("the BPF object has no fentry programs")
            code, msg, messages = obj.load()
            if not code:
                break
            obj.close()
            if not self.hash_storage and (any("sk_storage" in m for m in messages) or kernel_version() < (5, 11)):
                # tracing programs may use socket storage since 5.11 only (the verifier's word for it can be
                # past what libbpf's message holds: the version decides then)
                self.hash_storage = True
                continue
            missing = [m.group(1) for m in map(re.compile(r"find kernel BTF type ID of '(\w+)'").search,
                                                  messages) if m]
            failed = re.search(r"prog '(\w+)': (?:BPF program load failed|failed to find kernel BTF type ID)",
                               "\n".join(messages))
            if failed and failed.group(1) in FENTRY_PROGRAMS and failed.group(1) not in disabled:
                # never the whole monitor for want of the fentry programs: without them, as before 6.10
                disabled += list(FENTRY_PROGRAMS)
                reason = self._load_error(code, msg, messages, []).removeprefix("socket-snoop: ").split("; run ")[0]
                self._no_fentry(reason)
                continue
            progs = [p for p, tp in PROGRAMS.items() if tp.split(":")[1] in missing and p not in disabled]
            if progs and not set(REQUIRED) & set(progs):
                for p in progs:
                    self.skipped.append(PROGRAMS[p])
                    self.log(f"socket-snoop: warning: this kernel has no tracepoint {PROGRAMS[p]}: "
                             "those events are not reported")
                disabled += progs
                continue
            raise SnoopError(self._load_error(code, msg, messages, missing))
        self.obj = obj
        self.ncpus = possible_cpus()
        for entry in self.filters.map_entries():
            obj.update(*entry)
        return self

    @staticmethod
    def _load_error(code, msg, messages, missing):
        if missing:
            return (f"socket-snoop: this kernel has no tracepoint {missing[0]} (or its BTF lacks it); "
                    "socket-snoop needs Linux 5.8 or newer with BTF")
        text = "\n".join(messages)
        prog = re.search(r"prog '(\w+)': BPF program load failed", text)
        if prog:
            log = text.split("-- BEGIN PROG LOAD LOG --", 1)[-1].split("-- END PROG LOAD LOG --", 1)[0]
            lines = [line.strip() for line in log.splitlines() if line.strip()]
            # the verifier's complaint: the last line that is not an instruction, a source line or a summary
            reason = next((line for line in reversed(lines) if not re.match(
                r"(processed \d|verification time|stack depth|;|\d+: |libbpf:|R\d)", line)), "no reason given")
            where = PROGRAMS.get(prog.group(1), "?")
            return (f"socket-snoop: the kernel rejected the BPF program {prog.group(1)} (tracepoint {where}): "
                    f"{reason}; run 'socket-snoop check', and please report this kernel ({os.uname().release})")
        if code == 1:  # EPERM
            return ("socket-snoop: the kernel refused to load the BPF program (permission denied): "
                    "run as root; if you are root, check kernel lockdown and kernel.unprivileged_bpf_disabled")
        tail = " | ".join(m.strip() for m in messages[-3:] if m.strip())
        return f"socket-snoop: {msg}" + (f" ({tail})" if tail else "")

    def set_cgroup_filter(self, cid, bits):
        """A cgroup filter's cgroup that appeared (or changed) while we run (pipeline/filter_cgroups.py)."""
        self.obj.update(abi.MAP_FILTER_CGROUPS, abi.U64_KEY.pack(cid), bytes((bits,)))

    def drop_cgroup_filter(self, cid):
        self.obj.delete(abi.MAP_FILTER_CGROUPS, abi.U64_KEY.pack(cid))

    def seed_listeners(self, listeners, ns):
        """Tell the kernel who owns the listening sockets that predate us (in network namespace ns)."""
        for family, addr, port, pid, comm, uid in listeners:
            key = LISTEN_KEY.pack(ns, port, family, addr.ljust(16, b"\0"))
            self.obj.update(abi.MAP_LISTENERS, key, OWNER_STRUCT.pack(pid, uid, comm.ljust(abi.COMM_LEN, b"\0")))

    def set_owner(self, skaddr, pid, comm, uid=0):
        """Remember an owner found in /proc, so the kernel attributes the socket's next events."""
        try:
            self.obj.update(abi.MAP_OWNERS, abi.SOCK_KEY.pack(skaddr),
                            OWNER_STRUCT.pack(pid, uid, comm.ljust(abi.COMM_LEN, b"\0")))
        except SnoopError:
            pass

    def forget_owner(self, skaddr):
        self.obj.delete(abi.MAP_OWNERS, abi.SOCK_KEY.pack(skaddr))

    def attach(self):
        for prog in PROGRAMS:
            if PROGRAMS[prog] in self.skipped:
                continue
            code, msg = self.obj.attach(prog)
            if code:
                self.close()
                raise SnoopError(f"socket-snoop: {msg} (tracepoint {PROGRAMS[prog]})")
        if self.drops:
            code, msg = self.obj.attach(*abi.DROP_PROGRAMS)
            if code:
                self.close()
                raise SnoopError(f"socket-snoop: {msg} (tracepoint {abi.DROP_PROGRAMS['on_kfree_skb']})")
        if self.resets == RESETS_FENTRY:
            for prog in FENTRY_PROGRAMS:
                code, msg = self.obj.attach(prog)
                if code:  # both or neither: detach the one that may have attached
                    self.obj.detach(FENTRY_PROGRAMS)
                    self._no_fentry(f"{msg} (fentry on {FENTRY_PROGRAMS[prog]})")
                    break
        return self

    # -- reading -------------------------------------------------------------
    def open_reader(self, on_sample=None):
        """The ring buffer (read(): a blob of records), or for --buffer perf a perf buffer."""
        if self.buffer == "perf":
            pages = _pow2_at_least(self.buffer_size // max(self.ncpus, 1) // 4096, 1)
            # no lost callback: the kernel program already counts each failed write as lost
            self.reader = PerfBuffer(self.obj.map_fd(abi.MAP_PERF_EVENTS), pages, on_sample, None)
        else:
            self.reader = RingBuffer(self.obj.map_fd(abi.MAP_EVENTS), self.buffer_size, EVENT.size,
                                     awake_fd=self.obj.map_fd(abi.MAP_READER_AWAKE))
            self.spare_reader = RingBuffer(self.obj.map_fd(abi.MAP_EVENTS_SPARE), self.spare_size, EVENT.size)
        if self.records:
            self.record_reader = RingBuffer(self.obj.map_fd(abi.MAP_RECORDS), self.record_size, CONN_RECORD.size)
            self.record_spare_reader = RingBuffer(self.obj.map_fd(abi.MAP_RECORDS_SPARE), self.record_spare_size,
                                                  CONN_RECORD.size)
        return self.reader

    def counters(self):
        """Sums over CPUs of the kernel's counters (indexed by abi.C_*)."""
        out = [0] * C_MAX
        if not self.obj:
            return out
        for idx in range(C_MAX):
            raw = self.obj.lookup(abi.MAP_COUNTERS, abi.U32_KEY.pack(idx), 8 * self.ncpus)
            if raw:
                out[idx] = sum(struct.unpack(f"<{self.ncpus}Q", raw))
        return out

    def drop_reasons(self):
        """{reason value: packets} of the TCP drops counted so far; {} without the drops' program."""
        return read_drop_reasons(self.obj, self.ncpus) if self.obj and self.drops else {}

    def listen_drops(self):
        """The listeners whose accept queue overflowed, still open (dropreasons.read_listen_drops)."""
        return read_listen_drops(self.obj) if self.obj and self.drops else {}

    def listeners(self):
        """{(netns, family, addr bytes (16), port): (pid, uid, comm bytes)} of the listeners the kernel program
        knows (those that listened while it ran, and those seeded from /proc): at most SS_MAX_LISTENERS."""
        out = {}
        for key, value in (self.obj.items(abi.MAP_LISTENERS) if self.obj else ()):
            netns, port, family, addr = LISTEN_KEY.unpack(key)
            pid, uid, comm = OWNER_STRUCT.unpack(value)
            out[(netns, family, addr, port)] = (pid, uid, comm.split(b"\0", 1)[0])
        return out

    @staticmethod
    def shed(counters):
        """The events shed when the reader fell behind (counted in C_LOST), by kind: {name: n}."""
        return {name: counters[idx] for name, idx in abi.SHED_KINDS}

    def metric_counts(self):
        """The in-kernel metrics (bpf/metrics.h): abi.M_SLOTS sums over CPUs, or None (not loaded, or closed)."""
        with self.lock:
            raw = self.obj.lookup(abi.MAP_METRIC_COUNTS, abi.U32_KEY.pack(0), 8 * abi.M_SLOTS * self.ncpus) \
                if self.obj else None
        if not raw:
            return None
        per_cpu = struct.unpack(f"<{abi.M_SLOTS * self.ncpus}Q", raw)
        return [sum(per_cpu[i::abi.M_SLOTS]) for i in range(abi.M_SLOTS)]

    def missed(self, counters):
        """Tracepoint hits none of our programs ran for (a softirq hit the tracepoint while the program
        was running on that CPU). Not in 'seen'; reported beside 'lost'. on_state_change's misses are
        taken by on_state_change_missed (counted as C_RESCUED: all of them, where it can tell the
        context levels apart); its own misses are hits that on_state_change took."""
        if not self.obj:
            return 0
        misses = {p: self.obj.recursion_misses(p) for p in PROGRAMS if PROGRAMS[p] not in self.skipped}
        if self.resets == RESETS_FENTRY:
            misses.update((p, self.obj.recursion_misses(p)) for p in FENTRY_PROGRAMS)
        if self.drops:
            misses.update((p, self.obj.recursion_misses(p)) for p in abi.DROP_PROGRAMS)
        misses["on_state_change"] = max(0, misses.get("on_state_change", 0) - counters[C_RESCUED])
        misses.pop("on_state_change_missed", None)
        return sum(misses.values())

    def detach(self):
        if self.obj:
            self.obj.detach()

    def close(self):
        for reader in (self.reader, self.spare_reader, self.record_reader, self.record_spare_reader):
            if reader:
                reader.close()
        self.reader = self.spare_reader = self.record_reader = self.record_spare_reader = None
        with self.lock:
            if self.obj:
                self.obj.close()
                self.obj = None
