"""The monitor's scheduling priority (--priority-boost N), as auditd's priority_boost: at start, run at nice -N
at least. Under a flood of connections the monitor competes for the CPU with the processes making it; at
its fair share among them it falls behind and sheds events (bench/README.md: "Lossless at a fair share").
A nice value weighs only against the tasks of the same scheduling group (the session's autogroup, the
cgroup), which is where the monitor meets the workload in a pod or a shared session; the service unit sets
the same with Nice= (commands/service.py), so in the unit this finds it done."""

import os


def boost(decrement, say):
    """Lower this process's nice value to -decrement if it is higher (never raise it). Linux keeps a nice
    value per thread: called before any thread starts, so that every thread (the reader first) has it."""
    if decrement <= 0:
        return
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if current <= -decrement:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, 0, -decrement)
    except PermissionError:
        say(f"socket-snoop: cannot raise its priority to nice -{decrement} (needs CAP_SYS_NICE): running at "
            f"nice {current}; under a flood of connections it may shed events (--priority-boost 0 says this "
            "is meant)")
