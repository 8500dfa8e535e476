"""`socket-snoop check`: what the monitor needs, and whether this host has it.

One line per need, ok or MISSING, then a verdict; exit 0 when the monitor can
run here, 1 when not. Works unprivileged (it then says what is missing): the
tracepoints are looked up in the kernel's BTF, which everyone may read. As
root it also loads and attaches the BPF program, the only complete test.
"""

import os
import platform

from ..errors import SnoopError
from ..kernel.abi import MAX_SOCKETS_HASH, PROGRAMS, REQUIRED
from ..kernel.dropreasons import drop_reasons_text, drop_support
from ..kernel.libbpf import Libbpf, ringbuf_works
from ..kernel.loader import (BTF_PATH, RESETS_FENTRY, RESETS_PARTIAL, RESETS_TRACEPOINT, Probe, architecture_problem,
                              effective_caps, has_bpf_caps, kernel_version, reset_coverage, reset_coverage_text)
from ..pipeline.identity import CgroupTree, cgroup2_mount
from ..output.sinks import insecure_dir
from ..settings.monitor import CONFIG, RunSettings, filters_from, options_from_config
from ..settings.option import CommandParser, freeze, settings_class

MIN_KERNEL = (5, 8)  # with the default ring buffer
# what the object needs, oldest first: (kernel, what needs it, for which --buffer); see the feature list
# at the top of socketsnoop.bpf.c
FLOORS = (((5, 5), "tracepoint programs with BTF arguments (tp_btf) need 5.5", ("ringbuf", "perf")),
          ((5, 8), "BPF ring buffer needs 5.8 (--buffer perf: 5.5)", ("ringbuf",)))
TRACEFS = ("/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events")


class Result:
    def __init__(self, what, ok, detail, required=True):
        self.what, self.ok, self.detail, self.required = what, ok, detail, required

    def line(self):
        status = "ok" if self.ok else ("MISSING" if self.required else "missing")
        return f"{status:<8} {self.what}: {self.detail}"


def check_architecture():
    problem = architecture_problem()
    return Result("architecture", not problem, problem or platform.machine())


def check_kernel(buffer="ringbuf", release=None):
    """The kernel's version against the floors of the object (with this --buffer): every one it misses."""
    release = release or os.uname().release
    version = kernel_version(release)
    floors = [(v, why) for v, why, buffers in FLOORS if buffer in buffers]
    missed = [why for v, why in floors if version < v]
    if missed:
        return Result("kernel", False, f"{release}: {'; '.join(missed)}")
    return Result("kernel", True, f"{release} ({'%d.%d' % floors[-1][0]} or newer needed)")


def read_btf():
    try:
        with open(BTF_PATH, "rb") as f:
            return f.read()
    except OSError:
        return None


def check_btf(btf):
    if btf is not None:
        return Result("BTF", True, f"{BTF_PATH} ({len(btf) >> 10} KiB)")
    why = "missing" if not os.path.exists(BTF_PATH) else "unreadable"
    return Result("BTF", False, f"{BTF_PATH} is {why}: a kernel built with CONFIG_DEBUG_INFO_BTF=y is needed")


def check_caps():
    if os.geteuid() == 0 and has_bpf_caps():
        return Result("capabilities", True, "root")
    if has_bpf_caps():
        return Result("capabilities", True, "CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)")
    return Result("capabilities", False, f"uid {os.geteuid()}, effective capabilities {effective_caps():#x}: "
                                         "run as root (or with CAP_BPF and CAP_PERFMON)")


def check_libbpf():
    try:
        lib = Libbpf.get()
    except SnoopError as e:
        return Result("libbpf", False, str(e)), None
    return Result("libbpf", True, f"libbpf.so.1 version {lib.version}"), lib


def check_tracepoint(tp, btf, required):
    """A tp_btf program needs the type btf_trace_<name> in the kernel's BTF (what libbpf looks up)."""
    group, name = tp.split(":")
    what = f"tracepoint {tp}"
    optional = "" if required else " (optional: without it those events are not reported)"
    in_tracefs = next((True for d in TRACEFS if os.path.isdir(f"{d}/{group}/{name}")), None)
    if btf is not None:
        if b"\0btf_trace_" + name.encode() + b"\0" in btf:
            return Result(what, True, "in the kernel BTF", required)
        extra = "; tracefs has it, but without BTF it cannot be attached" if in_tracefs else ""
        return Result(what, False, f"not in the kernel BTF{extra}{optional}", required)
    if in_tracefs:
        return Result(what, False, f"in tracefs, but there is no BTF to attach to it{optional}", required)
    return Result(what, False, f"cannot tell: no readable BTF or tracefs{optional}", required)


def check_ringbuf(lib, buffer):
    """BPF ring buffers: Linux 5.8; when privileged, a real one is created."""
    required = buffer == "ringbuf"
    alt = " (or use --buffer perf)" if required else ""
    if lib is not None and has_bpf_caps():
        ok, why = ringbuf_works()
        return Result("BPF ring buffer", ok, "created one" if ok else f"cannot create one: {why}{alt}", required)
    ok = kernel_version() >= MIN_KERNEL
    return Result("BPF ring buffer", ok, "Linux 5.8 or newer" if ok else "needs Linux 5.8" + alt, required)


def check_log(log_file):
    if not log_file:
        return Result("log file", True, "none (--no-log-file)")
    path = os.path.abspath(log_file)
    d = os.path.dirname(path)
    try:
        why = insecure_dir(os.stat(d), os.geteuid())
    except OSError:
        why = None
    if why:
        return Result("log file", False, f"directory {d} is not safe for a root-owned log: {why} (the monitor "
                      "refuses it: use a directory only root can write to)")
    if os.path.islink(path) or (os.path.exists(path) and not os.path.isfile(path)):
        return Result("log file", False, f"{path} is not a regular file (the monitor refuses it)")
    if os.path.exists(path):
        ok = os.access(path, os.W_OK)
        return Result("log file", ok, f"{path} {'is writable' if ok else 'is not writable'}"
                      + ("" if ok else ": run as root, or use --log-file PATH or --no-log-file"))
    if not os.path.isdir(d):
        return Result("log file", False, f"directory {d} does not exist")
    ok = os.access(d, os.W_OK | os.X_OK)
    return Result("log file", ok, f"directory {d} {'is writable' if ok else 'is not writable'}"
                  + ("" if ok else ": run as root, or use --log-file PATH or --no-log-file"))


def resets_result(mode, why):
    return Result("resets sent", mode != RESETS_PARTIAL, reset_coverage_text(mode, why), required=False)


def check_resets_unprivileged():
    """Without privileges: the tracepoint's arguments tell whether it sees every reset; whether fentry
    works (before 6.10) only a load can tell."""
    try:
        mode, why = reset_coverage()
    except SnoopError as e:
        return Result("resets sent", False, str(e), required=False)
    if mode == RESETS_TRACEPOINT:
        return resets_result(mode, why)
    return Result("resets sent", False, "before Linux 6.10 those sent to a closed port or from timewait and "
                  "request sockets need fentry programs; whether this kernel allows them needs root to tell",
                  required=False)


def check_drops(btf):
    """What the kernel tells of the TCP packets it drops: their reason (kfree_skb's, Linux 5.17+), and the
    socket they were received for (rx_sk, 6.11+), from the tracepoint's arguments in the kernel's BTF."""
    if btf is None:
        return Result("drop reasons", False, "the kernel's BTF is needed to tell", required=False)
    reason, rx_sk = drop_support()
    return Result("drop reasons", reason, drop_reasons_text(reason, rx_sk), required=False)


def check_cgroup2():
    found = cgroup2_mount()
    if found:
        return Result("cgroup v2", True, f"mounted at {found[0]}", required=False)
    return Result("cgroup v2", False, "no cgroup2 mount: the cgroup, unit, container and pod fields are left out, "
                  "and --cgroup, --unit, --container need it", required=False)


def check_load(opts):
    """Load and attach the program for real (needs privileges), with the config's filters, then detach it:
    (load, resets sent, where the per-socket state is kept); the last two None when it did not load."""
    warnings = []
    probe = None
    try:
        filters = filters_from(opts)
        if filters.wants_cgroups():
            filters.resolve_cgroups(CgroupTree())
        probe = Probe(filters, buffer=opts.buffer, buffer_size=opts.buffer_size, log=warnings.append)
        probe.load()
        probe.attach()
    except SnoopError as e:
        return Result("load BPF program", False, str(e).removeprefix("socket-snoop: ")), None, None
    finally:
        if probe is not None:
            probe.close()
    note = f" ({len(probe.skipped)} optional tracepoints skipped)" if probe.skipped else ""
    how = " (with fentry programs)" if probe.resets == RESETS_FENTRY else ""
    if probe.hash_storage:
        where = (f"a hash of at most {MAX_SOCKETS_HASH:,} sockets (this kernel has no socket storage for "
                 "tracing programs, 5.11+): beyond that, counted as storage_failed")
    else:
        where = "socket-local storage (lives and dies with each socket, never evicted)"
    return (Result("load BPF program", True, f"loaded and attached{how}{note}"),
            resets_result(probe.resets, probe.resets_why), Result("per-socket state", True, where))


def config_settings(config):
    """(the RunSettings `socket-snoop` would run with from the config file, a Result if the file is refused):
    the defaults then, so that every other check still runs."""
    try:
        return options_from_config(config), None
    except SnoopError as e:
        return RunSettings(), Result("config file", False, str(e).removeprefix("socket-snoop: "))


def run_checks(config=None):
    opts, config_error = config_settings(config)
    btf = read_btf()
    arch = check_architecture()
    results = [arch, check_kernel(opts.buffer), check_btf(btf), check_caps()]
    libbpf_result, lib = check_libbpf()
    results.append(libbpf_result)
    required = {PROGRAMS[p] for p in REQUIRED}
    for tp in dict.fromkeys(PROGRAMS.values()):  # each tracepoint once, in order
        results.append(check_tracepoint(tp, btf, tp in required))
    results.append(check_ringbuf(lib, opts.buffer))
    results.append(check_log(opts.log_file))
    results.append(check_cgroup2())
    results.append(check_drops(btf))
    if config_error:
        results.append(config_error)
    if has_bpf_caps() and lib is not None and btf is not None and arch.ok:
        load, resets, state = check_load(opts)
        results += [r for r in (resets, load, state) if r]
    elif lib is not None and btf is not None:
        results.append(check_resets_unprivileged())
    return results


def build_parser():
    p = CommandParser(prog="socket-snoop check",
                      description="Check that this host can run the monitor. Exit 0: it can; 1: it cannot.")
    p.add_group("the configuration checked with", [CONFIG])
    return p


CheckSettings = settings_class("CheckSettings", [CONFIG], "`socket-snoop check`'s settings.")


def main(argv):
    opts = freeze(CheckSettings, build_parser().parse_args(argv))
    results = run_checks(opts.config)
    for r in results:
        print(r.line())
    missing = [r.what for r in results if r.required and not r.ok]
    if missing:
        print(f"verdict: socket-snoop cannot run here: {', '.join(missing)}")
        return 1
    print("verdict: socket-snoop can run here")
    return 0
