/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * What an event says about its socket, read from the kernel's structures:
 * network namespace, addresses and ports, inode, cgroup.
 */
#ifndef SOCKETSNOOP_SOCK_H
#define SOCKETSNOOP_SOCK_H

#include "defs.h"
#include "socketsnoop.h"

/*
 * sk comes from the tracepoint: a BTF pointer that is read with plain loads
 * (CO-RE relocated, faults handled by the kernel), much cheaper than
 * bpf_probe_read_kernel() calls.
 */
static __always_inline __u32 netns_of(const struct sock *sk)
{
	return sk->__sk_common.skc_net.net->ns.inum;
}

static __always_inline bool is_v4mapped(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;

	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0x0000ffff);
}

/* An IPv4-mapped IPv6 pair is reported as IPv4. */
static __always_inline void normalize_family(struct event *e)
{
	if (e->family == 6 && is_v4mapped(e->saddr) && is_v4mapped(e->daddr)) {
		__builtin_memcpy(e->saddr, e->saddr + 12, 4);
		__builtin_memcpy(e->daddr, e->daddr + 12, 4);
		__builtin_memset(e->saddr + 4, 0, 12);
		__builtin_memset(e->daddr + 4, 0, 12);
		e->family = 4;
	}
}

/* addresses from the socket's common part (valid for full, request and timewait sockets) */
static __always_inline void copy_v6(__u8 *dst, const struct in6_addr *a)
{
	__u32 *d = (__u32 *)dst;

	d[0] = a->in6_u.u6_addr32[0];
	d[1] = a->in6_u.u6_addr32[1];
	d[2] = a->in6_u.u6_addr32[2];
	d[3] = a->in6_u.u6_addr32[3];
}

/*
 * The family whose fields hold the addresses: an IPv4 connection on a
 * dual-stack IPv6 socket (its destination IPv4-mapped) is AF_INET, its IPv4
 * fields right from the start, while the IPv6 copy of the local address is
 * filled in only after connect() has made the socket SYN_SENT.
 */
static __always_inline __u16 addr_family(const struct sock_common *skc)
{
	__u16 family = skc->skc_family;

	if (family == AF_INET6 && skc->skc_v6_daddr.in6_u.u6_addr32[0] == 0 &&
	    skc->skc_v6_daddr.in6_u.u6_addr32[1] == 0 &&
	    skc->skc_v6_daddr.in6_u.u6_addr32[2] == bpf_htonl(0x0000ffff))
		return AF_INET;
	return family;
}

static __always_inline bool fill_addrs(struct event *e, const struct sock_common *skc)
{
	__u16 family = addr_family(skc);

	if (family == AF_INET) {
		e->family = 4;
		*(__u32 *)e->saddr = skc->skc_rcv_saddr;
		*(__u32 *)e->daddr = skc->skc_daddr;
	} else if (family == AF_INET6) {
		e->family = 6;
		copy_v6(e->saddr, &skc->skc_v6_rcv_saddr);
		copy_v6(e->daddr, &skc->skc_v6_daddr);
	} else {
		return false;
	}
	e->dport = bpf_ntohs(skc->skc_dport);
	return true;
}

static __always_inline bool v6_unspecified(const struct in6_addr *a)
{
	return (a->in6_u.u6_addr32[0] | a->in6_u.u6_addr32[1] | a->in6_u.u6_addr32[2] | a->in6_u.u6_addr32[3]) == 0;
}

/*
 * Either end's address unspecified (0.0.0.0, ::), as fill_addrs() and normalize_family() would make the
 * event's, without the event: passes_filters()'s SS_FILT_SKIP_UNSPEC test (an IPv6 pair is mapped IPv4 only
 * when both are, and addr_family() takes a mapped destination as IPv4; no address at all: unspecified).
 */
static __always_inline bool ends_unspecified(const struct sock_common *skc)
{
	__u16 family = addr_family(skc);

	if (family == AF_INET)
		return skc->skc_rcv_saddr == 0 || skc->skc_daddr == 0;
	if (family == AF_INET6)
		return v6_unspecified(&skc->skc_v6_rcv_saddr) || v6_unspecified(&skc->skc_v6_daddr);
	return true;
}

/*
 * Full socket: local port from inet_sport, as the inet_sock_set_state
 * tracepoint itself reports it (skc_num is already 0 at CLOSE on an
 * accepted socket, once its port is released).
 */
static __always_inline bool fill_full_sock(struct event *e, const struct sock *sk)
{
	const struct inet_sock *inet = (const struct inet_sock *)sk;

	if (!fill_addrs(e, &sk->__sk_common))
		return false;
	/*
	 * inet_sport lies past struct sock, where plain loads through sk may
	 * not go. The socket as a tcp_sock may (a cheap check, 5.9+); a probe
	 * read (twice the cost) on older kernels, and for a socket that is not
	 * TCP's (a reset's socket may be a request or timewait one).
	 */
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_skc_to_tcp_sock)) {
		const struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);

		if (tp) {
			e->sport = bpf_ntohs(tp->inet_conn.icsk_inet.inet_sport);
			return true;
		}
	}
	e->sport = bpf_ntohs(BPF_CORE_READ(inet, inet_sport));
	return true;
}

/*
 * The socket as a tcp_sock that plain loads may read (a BTF pointer, 5.9+), else NULL: then
 * TCP_READ() falls back to probe reads (twice the cost each; a connection's record reads ten fields).
 */
static __always_inline const struct tcp_sock *tcp_sock_of(const struct sock *sk)
{
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_skc_to_tcp_sock))
		return bpf_skc_to_tcp_sock((void *)sk);
	return NULL;
}

/* a field of the tcp_sock sk: through tp (tcp_sock_of(sk)) when there is one */
#define TCP_READ(tp, sk, field) ((tp) ? (tp)->field : BPF_CORE_READ((const struct tcp_sock *)(sk), field))

/* Socket inode, for user space to find the owner of a socket that predates us. */
static __always_inline __u64 inode_of(const struct sock *sk)
{
	struct socket *so = sk->sk_socket;

	if (!so || !so->file)
		return 0;
	return so->file->f_inode->i_ino;
}

/*
 * The socket's cgroup (cgroup v2), as the kernel recorded it when the socket
 * was made (an accepted socket: its listener's): right in softirq context
 * too, where the current task is not the owner. Two layouts (CO-RE):
 * since 5.15 sock_cgroup_data holds a struct cgroup *; before, one word
 * (val) that is the pointer, or net_prio/net_cls data when its low bits are
 * set (then no cgroup is known: 0).
 */
struct sock_cgroup_data___old {
	__u64 val;
};

struct cgroup___old {
	int level;
	__u64 ancestor_ids[];
};

/* the socket's struct cgroup, as a plain address (0 if none) */
static __always_inline __u64 sock_cgroup(const struct sock *sk)
{
	if (!sk)
		return 0;
	if (bpf_core_field_exists(struct sock_cgroup_data, cgroup))
		return (__u64)BPF_CORE_READ(sk, sk_cgrp_data.cgroup);
	__u64 v = BPF_CORE_READ((struct sock_cgroup_data___old *)&sk->sk_cgrp_data, val);

	return v & 3 ? 0 : v;
}

/* cgroup id (kernfs node id, u64 since 5.5: the inode number of its directory on cgroup2) */
static __always_inline __u64 cgroup_id_at(__u64 cg)
{
	return cg ? BPF_CORE_READ((struct cgroup *)cg, kn, id) : 0;
}

/* the cgroup v2 id of any socket address (a scalar too: a listener from a request socket), 0 if none */
static __always_inline __u64 cgroup_of_any(const struct sock *sk)
{
	return cgroup_id_at(sock_cgroup(sk));
}

/*
 * the socket's cgroup v2 id, 0 if none: struct event.cgroup, struct conn_record.cgroup. sk: a BTF pointer
 * (a program's argument). Since 5.15 by plain loads through it (a fault reads 0), cheaper than the three
 * probe reads of cgroup_of_any(); before, the cgroup is a word, read as one.
 */
static __always_inline __u64 cgroup_of(const struct sock *sk)
{
	if (sk && bpf_core_field_exists(struct sock_cgroup_data, cgroup)) {
		const struct cgroup *cg = sk->sk_cgrp_data.cgroup;

		return cg ? cg->kn->id : 0;
	}
	return cgroup_of_any(sk);
}

#endif /* SOCKETSNOOP_SOCK_H */
