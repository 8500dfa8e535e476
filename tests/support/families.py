"""families.py ALLOWED COMMAND...: run COMMAND with socket() refused (EAFNOSUPPORT) for every address family
but ALLOWED (comma-separated numbers), as a systemd unit's RestrictAddressFamilies= refuses them.
Standard library and libseccomp (through ctypes)."""

import ctypes
import ctypes.util
import errno
import os
import sys

SCMP_ACT_ALLOW, SCMP_ACT_ERRNO = 0x7FFF0000, 0x00050000
SCMP_CMP_EQ = 4
AF_MAX = 64  # past every family Linux has (46 in 6.18)


class ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]


def main():
    allowed = {int(f) for f in sys.argv[1].split(",") if f}
    lib = ctypes.CDLL(ctypes.util.find_library("seccomp"))
    lib.seccomp_init.restype = ctypes.c_void_p
    ctx = ctypes.c_void_p(lib.seccomp_init(ctypes.c_uint32(SCMP_ACT_ALLOW)))
    nr = lib.seccomp_syscall_resolve_name(b"socket")
    for family in range(AF_MAX):
        if family not in allowed:
            cmp = (ArgCmp * 1)(ArgCmp(0, SCMP_CMP_EQ, family, 0))
            if lib.seccomp_rule_add_array(ctx, ctypes.c_uint32(SCMP_ACT_ERRNO | errno.EAFNOSUPPORT), nr, 1, cmp):
                sys.exit(f"families.py: cannot add the rule for family {family}")
    if lib.seccomp_load(ctx):  # sets no_new_privs first (the unit's NoNewPrivileges=yes)
        sys.exit("families.py: cannot load the seccomp filter")
    os.execvp(sys.argv[2], sys.argv[2:])


if __name__ == "__main__":
    main()
