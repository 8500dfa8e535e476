"""The listening sockets of a network namespace as the kernel tells them to `ss -ltm`: NETLINK_SOCK_DIAG
(inet_diag), filtered to LISTEN in the kernel, so a namespace's tens of thousands of TIME_WAIT sockets cost
nothing. For a listener: the accept queue's length (idiag_rqueue, sk_ack_backlog), its size (idiag_wqueue,
sk_max_ack_backlog) and its drops (INET_DIAG_SKMEMINFO's SK_MEMINFO_DROPS: sk_drops). Another namespace's
are asked through a socket made in it (a socket stays in the namespace it was made in)."""

import ctypes
import os
import socket
import threading

from .abi import INET_DIAG_MSG, INET_DIAG_REQ_V2, NLMSGHDR, RTATTR, U32_NATIVE

CLONE_NEWNET = 0x40000000
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCP_LISTEN_BIT = 1 << 10
INET_DIAG_SKMEMINFO = 7
SK_MEMINFO_DROPS = 8

_libc = ctypes.CDLL(None, use_errno=True)


def diag_socket():
    """A sock_diag socket in our network namespace; OSError where AF_NETLINK sockets are refused (a systemd
    unit's RestrictAddressFamilies= without it: EAFNOSUPPORT)."""
    try:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    except OSError as e:
        raise OSError(e.errno, f"a NETLINK_SOCK_DIAG socket: {e.strerror}") from None


def diag_socket_in(pid, proc="/proc"):
    """A sock_diag socket in process pid's network namespace, made on a thread of its own that enters the
    namespace and ends, so no thread of ours is left in it. None if the process is gone; OSError (its
    strerror naming the step) if the namespace cannot be entered (setns needs CAP_SYS_ADMIN) or the socket
    not made there (a sandbox without AF_NETLINK)."""
    made = []

    def run():
        try:
            fd = os.open(f"{proc}/{pid}/ns/net", os.O_RDONLY)
        except (FileNotFoundError, ProcessLookupError):
            return
        except OSError as e:
            made.append(OSError(e.errno, f"opening {proc}/{pid}/ns/net: {e.strerror}"))
            return
        try:
            if _libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                made.append(OSError(err, f"setns: {os.strerror(err)}"))
                return
        finally:
            os.close(fd)
        try:
            made.append(diag_socket())
        except OSError as e:
            made.append(e)
    t = threading.Thread(target=run, name="netns-diag", daemon=True)
    t.start()
    t.join()
    if made and isinstance(made[0], OSError):
        raise made[0]
    return made[0] if made else None


def listening(sock, limit):
    """([(family 4 or 6, addr bytes (16), port, queue, backlog, drops or None)], skipped) of the TCP listeners
    of the sock_diag socket's namespace, v4 then v6; past limit they are counted (skipped), not kept."""
    out, skipped = [], 0
    for family, fam in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
        req = INET_DIAG_REQ_V2.pack(family, socket.IPPROTO_TCP, 1 << (INET_DIAG_SKMEMINFO - 1), TCP_LISTEN_BIT)
        sock.send(NLMSGHDR.pack(NLMSGHDR.size + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
                  + req)
        done = False
        while not done:
            data = sock.recv(1 << 16)
            if not data:
                break
            off = 0
            while off + NLMSGHDR.size <= len(data):
                length, kind = NLMSGHDR.unpack_from(data, off)[:2]
                if kind in (NLMSG_DONE, NLMSG_ERROR) or length < NLMSGHDR.size:
                    done = True
                    break
                if len(out) < limit:
                    row = _listener(data[off + NLMSGHDR.size: off + length], fam)
                    if row:
                        out.append(row)
                else:
                    skipped += 1
                off += (length + 3) & ~3
    return out, skipped


def _listener(msg, fam):
    if len(msg) < INET_DIAG_MSG.size:
        return None
    f = INET_DIAG_MSG.unpack_from(msg)
    port, addr, queue, backlog = int.from_bytes(f[4], "big"), f[6], f[11], f[12]
    drops, off = None, (INET_DIAG_MSG.size + 3) & ~3
    while off + RTATTR.size <= len(msg):
        length, kind = RTATTR.unpack_from(msg, off)
        if length < RTATTR.size:
            break
        if kind == INET_DIAG_SKMEMINFO and length >= RTATTR.size + U32_NATIVE.size * (SK_MEMINFO_DROPS + 1):
            drops = U32_NATIVE.unpack_from(msg, off + RTATTR.size + U32_NATIVE.size * SK_MEMINFO_DROPS)[0]
        off += (length + 3) & ~3
    return fam, addr if fam == 6 else addr[:4] + bytes(12), port, queue, backlog, drops
