"""Bytes and text captured once from this machine's kernel (6.18) and /proc, for the unit tests that parse
them. How each was captured is said beside it."""

# Six records (8-byte header, then struct event, 112 bytes) as this machine's kernel (6.18) wrote them into
# the `events` ring: socket-snoop's program loaded with -P 24117 (kernel/loader.py Probe, a 64K ring), one
# IPv4 and one IPv6 connection over loopback to a listener on port 24117 made by the capturing script
# (python, pid 30834, uid 0, in the cgroup /system.slice/sstest-capture.service made for it: cgroup id
# 1963), and the records read with RingBuffer.read(). The header is the kernel's: length 112, page offset 3.
# Kept here: the v4 client's SYN_SENT and ESTABLISHED, the v4 server side's LISTEN -> SYN_RECV, the v6
# client's SYN_SENT, the v6 server side's LISTEN -> SYN_RECV and its LAST_ACK -> CLOSE.
RING_RECORDS = [bytes.fromhex(h) for h in (
    "7000000003000000"  # header
    "67e4558301020000c01b26bb8288ffff0000000000000000f9ffffef0107020100000000727800000000355e7f0000010000000000000000"
    "000000007f000001000000000000000000000000707974686f6e00000000000000000000040000000000000000000000ab07000000000000",
    "7000000003000000"  # header
    "38ed568301020000c01b26bb8288ffff0000000000000000f9ffffef010201010000000072780000cab4355e7f0000010000000000000000"
    "000000007f000001000000000000000000000000707974686f6e00000000000000000000040000000000000000000000ab07000000000000",
    "7000000003000000"  # header
    "0a1b578301020000000026bb8288ffff0000000000000000f9ffffef010a03020000000072780000355ecab47f0000010000000000000000"
    "000000007f000001000000000000000000000000707974686f6e00000000000000000000040000000000000000000000ab07000000000000",
    "7000000003000000"  # header
    "4c575b830102000080e1f6098188ffff0000000000000000f9ffffef0107020100000000727800000000355e000000000000000000000000"
    "0000000100000000000000000000000000000001707974686f6e00000000000000000000060000000000000000000000ab07000000000000",
    "7000000003000000"  # header
    "8eb25b830102000000f5f6098188ffff0000000000000000f9ffffef010a03020000000072780000355e02aa000000000000000000000000"
    "0000000100000000000000000000000000000001707974686f6e00000000000000000000060000000000000000000000ab07000000000000",
    "7000000003000000"  # header
    "4b175c830102000000f5f6098188ffff0000000000000000f9ffffef010907010000000072780000355e02aa000000000000000000000000"
    "0000000100000000000000000000000000000001707974686f6e00000000000000000000060000000000000000000000ab07000000000000",
)]
# (family, oldstate, newstate, sport, dport) of each
RING_RECORD_FIELDS = [(4, 7, 2, 0, 24117), (4, 2, 1, 46282, 24117), (4, 10, 3, 24117, 46282),
                      (6, 7, 2, 0, 24117), (6, 10, 3, 24117, 43522), (6, 9, 7, 24117, 43522)]
RING_RECORD_CGROUP = 1963

# /proc/net/tcp and /proc/net/tcp6 of this machine, the header line and the lines of the sockets a
# script (python3) had opened: listeners on 127.0.0.1:24118, [::1]:24119, the v4-mapped
# [::ffff:127.0.0.1]:24120 (an IPv6 socket: it is in tcp6), 0.0.0.0:24121, [::]:24122 (dual-stack), and a
# connection 127.0.0.1:33898 -> 127.0.0.1:24118 with its accepted end (state 01, ESTABLISHED). Copied as
# read (`cat /proc/net/tcp`), without the tcp file's trailing blanks.
PROC_NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   3: 00000000:5E39 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 10285617 1 00000000295f5f36 100 0 0 10 0
   4: 0100007F:5E36 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 10285614 1 000000009cf6f804 100 0 0 10 0
 464: 0100007F:5E36 0100007F:846A 01 00000000:00000000 00:00000000 00000000     0        0 10285620 1 000000000225f65d 20 0 0 10 -1
 466: 0100007F:846A 0100007F:5E36 01 00000000:00000000 00:00000000 00000000     0        0 10285619 2 00000000639bd34d 20 0 0 10 -1
"""  # noqa: E501
PROC_NET_TCP6 = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:5E3A 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 10285618 1 00000000be3e40f9 100 0 0 10 0
   1: 00000000000000000000000001000000:5E37 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 10285615 1 00000000361bf8f9 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:5E38 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 10285616 1 000000005fe5ec2e 100 0 0 10 0
"""  # noqa: E501
# (family, address, port, inode) of the listeners above, as listening_sockets() gives them, in file order
PROC_LISTENERS = [(4, "0.0.0.0", 24121, 10285617), (4, "127.0.0.1", 24118, 10285614),
                  (6, "::", 24122, 10285618), (6, "::1", 24119, 10285615), (6, "::ffff:127.0.0.1", 24120, 10285616)]

# the same script's /proc/self/fd, as os.readlink() gave each link: fd -> link text. Its sockets are the
# ones above; fd 1 and 2 were the files its output went to, 251 the pipe of the shell that ran it.
PROC_FD_LINKS = {
    "0": "/dev/null",
    "1": "/tmp/bash_jobs.0/eada6e13c88c/stdout",
    "2": "/tmp/bash_jobs.0/eada6e13c88c/stderr",
    "3": "socket:[10285614]",
    "4": "socket:[10285615]",
    "5": "socket:[10285616]",
    "6": "socket:[10285617]",
    "7": "socket:[10285618]",
    "8": "socket:[10285619]",
    "9": "socket:[10285620]",
    "10": "/dev/null",
    "251": "pipe:[10284809]",
}

# a second script's /proc/PID/fd and its forked child's, the same way: an IPv6 TCP socket (inode
# 12120488), an epoll, a memfd, a pipe, a unix socket (12120490), both inherited by the child. In the
# parent, fd 9 was listed by os.listdir() and gone when read: the directory listing's own fd (None here).
PROC_FD_LINKS_PARENT = {
    "0": "pipe:[12120487]",
    "1": "/tmp/bash_jobs.0/d9b32a1d350a/stdout",
    "2": "/tmp/bash_jobs.0/d9b32a1d350a/stderr",
    "3": "socket:[12120488]",
    "4": "anon_inode:[eventpoll]",
    "5": "/memfd:x (deleted)",
    "6": "pipe:[12120489]",
    "7": "pipe:[12120489]",
    "8": "socket:[12120490]",
    "9": None,
    "10": "/dev/null",
    "251": "pipe:[12120482]",
}
PROC_FD_LINKS_CHILD = {fd: link for fd, link in PROC_FD_LINKS_PARENT.items() if link is not None}
