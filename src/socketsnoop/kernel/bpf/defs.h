/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Kernel constants the object needs that vmlinux.h cannot give (macros have
 * no BTF): address families, protocol numbers, TCP states, errno values.
 */
#ifndef SOCKETSNOOP_DEFS_H
#define SOCKETSNOOP_DEFS_H

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define RTF_LOCAL 0x80000000 /* include/uapi/linux/ipv6_route.h */
#define TCP_FLAG_RST 0x04    /* in byte 13 of the TCP header */

/* kernel TCP states (include/net/tcp_states.h: stable ABI, also in the tracepoint's format) */
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_FIN_WAIT1 4
#define TCP_FIN_WAIT2 5
#define TCP_CLOSE 7
#define TCP_CLOSE_WAIT 8
#define TCP_LAST_ACK 9
#define TCP_LISTEN 10
#define TCP_TIME_WAIT 6
#define TCP_NEW_SYN_RECV 12

/* errno values (uapi asm-generic/errno.h) a connection can end with, in sk->sk_err */
#define EPIPE 32
#define ENETUNREACH 101
#define ECONNRESET 104
#define ETIMEDOUT 110
#define ECONNREFUSED 111
#define EHOSTUNREACH 113

#endif /* SOCKETSNOOP_DEFS_H */
