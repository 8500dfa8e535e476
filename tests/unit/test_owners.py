"""Owners of sockets older than the monitor (pipeline/owners.py): /proc/net/tcp and tcp6 lines (the
listening sockets) and /proc/PID/fd links (socket inodes), on text captured from this machine's /proc
(captured.py) laid out as a proc tree in tmp_path, and on the real /proc."""

import ipaddress
import os
import socket

from socketsnoop.pipeline.owners import (
    ProcOwners,
    _hex_addr,
    listening_sockets,
    socket_inodes,
)

from support.captured import (
    PROC_FD_LINKS,
    PROC_FD_LINKS_CHILD,
    PROC_FD_LINKS_PARENT,
    PROC_LISTENERS,
    PROC_NET_TCP,
    PROC_NET_TCP6,
)
from support.net import free_port


def packed(text):
    return ipaddress.ip_address(text).packed


def proc_tree(root, net=True, processes=None):
    """A proc tree: net/tcp{,6} (the captured text) and PID/fd/FD links (link texts; None: no link, a
    regular file, which readlink refuses as it does an fd closed between listing and reading), PID/comm."""
    (root / "net").mkdir(parents=True)
    if net:
        (root / "net" / "tcp").write_text(PROC_NET_TCP)
        (root / "net" / "tcp6").write_text(PROC_NET_TCP6)
    for pid, (comm, links) in (processes or {}).items():
        (root / pid / "fd").mkdir(parents=True)
        (root / pid / "comm").write_text(comm + "\n")
        for fd, link in links.items():
            if link is None:
                (root / pid / "fd" / fd).write_text("")
            else:
                os.symlink(link, root / pid / "fd" / fd)
    return str(root)


def test_hex_addr_of_the_kernels_words():
    """Each 32-bit word as a native-endian (here little-endian) hex number."""
    assert _hex_addr("0100007F") == packed("127.0.0.1")
    assert _hex_addr("00000000") == packed("0.0.0.0")
    assert _hex_addr("00000000000000000000000001000000") == packed("::1")
    assert _hex_addr("0000000000000000FFFF00000100007F") == packed("::ffff:127.0.0.1")
    assert _hex_addr("B80D0120000000000000000001000000") == packed("2001:db8::1")


def test_listening_sockets_from_captured_lines(tmp_path):
    got = listening_sockets(proc_tree(tmp_path))
    assert got == [(fam, packed(addr), port, ino) for fam, addr, port, ino in PROC_LISTENERS]
    # the established connection's two ends (state 01) are not listeners
    assert 10285619 not in {ino for *_, ino in got} and 10285620 not in {ino for *_, ino in got}


def test_listening_sockets_without_ipv6_or_at_all(tmp_path):
    root = proc_tree(tmp_path)
    os.unlink(f"{root}/net/tcp6")  # IPv6 disabled: no tcp6 file
    assert [ino for *_, ino in listening_sockets(root)] == [10285617, 10285614]
    os.unlink(f"{root}/net/tcp")
    assert listening_sockets(root) == []


def test_listening_sockets_skip_short_lines(tmp_path):
    root = proc_tree(tmp_path)
    lines = PROC_NET_TCP.splitlines()
    (tmp_path / "net" / "tcp").write_text("\n".join([lines[0], lines[1][:40], lines[2], ""]))
    assert [ino for fam, *_, ino in listening_sockets(root) if fam == 4] == [10285614]


def test_socket_inodes_from_captured_links(tmp_path):
    root = proc_tree(tmp_path, processes={"3902": ("python3", PROC_FD_LINKS)})
    os.symlink("3902", tmp_path / "self")  # not a pid: passed over
    (tmp_path / "sys").mkdir()
    (tmp_path / "4242").mkdir()  # a process gone between listing /proc and reading its fd: no fd directory
    assert socket_inodes(root) == {ino: 3902 for ino in range(10285614, 10285621)}


def test_socket_inodes_shared_by_a_fork_and_unreadable_fds(tmp_path):
    root = proc_tree(tmp_path, processes={"15862": ("python3", PROC_FD_LINKS_PARENT),
                                          "15863": ("python3", PROC_FD_LINKS_CHILD)})
    got = socket_inodes(root)
    assert set(got) == {12120488, 12120490}  # sockets only: no pipe, epoll or memfd inode
    assert set(got.values()) <= {15862, 15863}  # the first holder found


def test_proc_owners_listeners_from_a_fake_tree(tmp_path):
    root = proc_tree(tmp_path, processes={"3902": ("python3", PROC_FD_LINKS)})
    # the real uid is the first of the Uid line (real, effective, saved, filesystem), as the kernel records it
    (tmp_path / "3902" / "status").write_text("Name:\tpython3\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t100\n")
    owners = ProcOwners(proc=root)
    assert owners.listeners() == [(fam, packed(addr), port, 3902, b"python3", 1000)
                                  for fam, addr, port, _ in PROC_LISTENERS]
    assert owners.lookup(10285620) == (3902, b"python3", 1000)  # an established socket's owner too
    assert owners.lookup(1) is None
    os.unlink(tmp_path / "3902" / "status")  # gone: uid 0, as for a process the kernel saw with none
    assert ProcOwners(proc=root).lookup(10285620) == (3902, b"python3", 0)


def test_real_proc_finds_a_socket_this_test_holds():
    port = free_port()
    with socket.socket(socket.AF_INET6) as s6, socket.socket(socket.AF_INET) as s4:
        s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s6.bind(("::1", port))
        s6.listen()
        s4.bind(("127.0.0.1", port))
        s4.listen()
        ino6, ino4 = os.fstat(s6.fileno()).st_ino, os.fstat(s4.fileno()).st_ino
        inodes = socket_inodes()
        assert inodes[ino6] == os.getpid() and inodes[ino4] == os.getpid()
        listeners = listening_sockets()
        assert (6, packed("::1"), port, ino6) in listeners
        assert (4, packed("127.0.0.1"), port, ino4) in listeners
    assert ino6 not in socket_inodes()  # closed: gone


def test_listeners_of_every_network_namespace(tmp_path):
    """Two processes in two network namespaces (PID/ns/net links), each namespace with its own PID/net/tcp: the
    listeners of each are found from that namespace's view and keyed by its inode; a namespace's listener
    held by a process of another namespace still gets that process (inodes are global)."""
    root = proc_tree(tmp_path, net=False, processes={"3902": ("python3", PROC_FD_LINKS),
                                                      "77": ("nginx", {"3": "socket:[999]"})})
    for pid, ns, tables in (("3902", 4026531840, ("", "")), ("77", 4026532999, (PROC_NET_TCP, PROC_NET_TCP6))):
        (tmp_path / pid / "ns").mkdir()
        os.symlink(f"net:[{ns}]", tmp_path / pid / "ns" / "net")
        (tmp_path / pid / "net").mkdir()
        for name, text in zip(("tcp", "tcp6"), tables):
            (tmp_path / pid / "net" / name).write_text(text)
    owners = ProcOwners(proc=root)
    want = [(fam, packed(addr), port, 3902, b"python3", 0) for fam, addr, port, _ in PROC_LISTENERS]
    assert owners.listeners_by_netns() == {4026532999: want}
    assert owners.listeners() == []  # the monitor's own namespace (root/net) has none here
