// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * socket-snoop kernel side: TCP state changes, retransmissions and resets,
 * with the socket's owner (not the task a softirq interrupted), filtered in
 * the kernel, sent to user space through a ring buffer (or a perf buffer).
 *
 * CO-RE: built once against vmlinux.h, relocated by libbpf against the
 * running kernel's BTF. Tracepoints (tp_btf), no kprobes; fentry only for the
 * resets older kernels do not trace (on_reset_sent_v4/v6, below).
 *
 * Programs: on_state_change and on_state_change_missed (inet_sock_set_state),
 * on_retransmit, on_synack_retransmit, on_reset_sent, on_reset_received,
 * on_error_report (inet_sk_error_report: why a connect failed); before 6.10,
 * where fentry works, on_reset_sent_v4 and on_reset_sent_v6 (fentry on
 * tcp_v4_send_reset / tcp_v6_send_reset).
 *
 * RE-ENTRY (the one place it is explained; comments elsewhere point here).
 * The kernel never runs a tracing program on a CPU where one of ours is
 * already running: a softirq (loopback delivery, constantly under churn)
 * that interrupts on_state_change and changes another socket's state is
 * skipped for it, only counted in the program's recursion_misses. Two
 * things follow, each handled once:
 *
 *  1. Missed hits. on_state_change_missed is a second program on the same
 *     tracepoint, attached after on_state_change, so the kernel runs it
 *     right after on_state_change for every hit. It takes exactly the hits
 *     on_state_change did not: on_state_change records, per CPU and per
 *     context level (0: a task, 1: a softirq that interrupted one; see
 *     context_level()), the hit it took; a hit that is not the one recorded
 *     at its level was missed. Between the two programs only a deeper level
 *     can run, and it records in its own slot. This covers the kernel's own
 *     instructions around on_state_change too, where it already counts the
 *     program as running. on_state_change_missed is never skipped for a hit
 *     on_state_change skipped: that hit is a softirq's, and nothing that
 *     changes TCP state interrupts a softirq. Its takes are counted
 *     (SS_C_RESCUED) and user space subtracts them from on_state_change's
 *     recursion_misses to report what no program ran for (missed=).
 *
 *  2. Two ring buffers. A program that runs while another of ours is running
 *     on the same CPU (struct cpu_state.depth > 1) may find the interrupted
 *     program holding the lock of `events`: the kernel would refuse the
 *     write rather than deadlock. Such events go to `events_spare`, which is
 *     also where a write `events` refused goes (its lock can give up with
 *     room to spare). User space reads both and merges them by time
 *     (pipeline/decode.py: merge_by_time).
 *
 * Kernel features by version (the floor is where the object loads at all).
 * Everything else the object uses (its other helpers, map types: hash, LRU
 * hash, LPM trie, per-CPU array, perf event array) is older than 5.5.
 *   tp_btf programs, BPF_PROG, fentry, bpf_probe_read_kernel   5.5
 *   BPF ring buffer, bpf_ringbuf_output/query                  5.8 (--buffer perf avoids it)
 *   bpf_skc_to_tcp_sock                                        5.9 (else a probe read: CO-RE guard)
 *   bpf_get_current_task_btf                                   5.11 (else bpf_get_current_task and a
 *                                                                   probe read: CO-RE guard, context_level())
 *   recursion_misses in bpf_prog_info                          5.12 (else missed= is 0)
 *   socket storage from tracing programs                       5.11 (else sock_states_hash)
 *   inet_sk_error_report tracepoint                            5.13 (else a failed connect whose
 *                                                                  error its owner took shows "closed")
 *   tcp_send_reset for resets without a full socket            6.10 (before: the fentry programs,
 *                                                                   where the kernel allows fentry)
 *   tcp_retransmit_skb's err argument                          newer than 6.12 (CO-RE guard)
 *   sock_cgroup_data.cgroup (before: a word, val)              5.15 (CO-RE guard: both read)
 *   cgroup.ancestors[] (before: ancestor_ids[], u64 ids)       6.0 (CO-RE guard: both read)
 * Tested: 5.10, 6.1, 6.1 PREEMPT_RT, 6.12 (tests/kernels/run), 6.18.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "socketsnoop.h"

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

/* Set by user space before load. */
const volatile __u32 filter_flags = 0;
const volatile __u32 filter_states = 0;	 /* bit n: new state n passes */
const volatile __u64 wakeup_bytes = 0;	 /* 0: wake user space on every event */
const volatile bool use_perf = false;	 /* perf event array instead of ring buffer */
const volatile bool use_hash_storage = false; /* sock_states_hash instead of socket storage (before 5.11) */
const volatile bool summary_only = false;	 /* no per-event records: connection records only (--summary-only) */
const volatile bool no_records = false;	 /* no connection records (--no-summary) */
const volatile __u32 cgroup_levels = 0;	 /* bit n: a cgroup filter names a cgroup at depth n (filter_cgroups) */
const volatile bool want_cgroup = true;	 /* struct event.cgroup wanted (JSON, --context): else left 0 */

/* keep struct event and struct conn_record in the object's BTF, where tests/test_abi.py reads their layout */
const volatile struct event *unused_event __attribute__((unused));
const volatile struct conn_record *unused_record __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, SS_RING_BYTES);
} events SEC(".maps");

/* events made inside another of our programs, and writes `events` refused: RE-ENTRY, 2 */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, SS_SPARE_RING_BYTES);
} events_spare SEC(".maps");

/* connection records (struct conn_record), and those made inside another of our programs: as for events */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, SS_RECORD_RING_BYTES);
} records SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, SS_SPARE_RING_BYTES);
} records_spare SEC(".maps");

/*
 * What we know of each socket (struct sock_state), kept with the socket: it
 * lives exactly as long as the socket and is never evicted. BPF_F_CLONE: a
 * socket accepted from a listener starts with a copy of the listener's,
 * hence its owner.
 */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
	__type(key, int);
	__type(value, struct sock_state);
} sock_states SEC(".maps");

/* the same before 5.11 (no socket storage for tracing programs): by socket address, deleted at CLOSE */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SS_MAX_SOCKETS_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct sock_state);
} sock_states_hash SEC(".maps");

/* a hit of inet_sock_set_state, as on_state_change_missed recognizes it */
struct hit {
	__u64 sk;
	__u32 states; /* oldstate << 8 | newstate */
	__u32 pad;
};

/* per CPU: how many of our programs are running there; per context level, the hit on_state_change took last */
struct cpu_state {
	__u32 depth;
	__u32 pad;
	struct hit taken[SS_CONTEXT_LEVELS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cpu_state);
} cpu_states SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} perf_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SS_C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/*
 * socket -> owner found in /proc by user space, for a socket older than us;
 * moved into the socket's state at its next event
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SS_MAX_OWNERS);
	__type(key, __u64);
	__type(value, struct owner);
} owners SEC(".maps");

/*
 * listening socket -> owner, so that passively opened sockets get their
 * listener's owner where socket storage cannot be cloned (a listener older
 * than us: seeded from /proc; kernels before 5.11). A plain hash: only
 * listeners go here, so no other socket can displace one.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SS_MAX_LISTENERS);
	__type(key, struct listen_key);
	__type(value, struct owner);
} listeners SEC(".maps");

/* filter sets, filled once by user space */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SS_MAX_FILTER_VALUES);
	__type(key, __u32);
	__type(value, __u8);
} filter_pids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SS_MAX_FILTER_VALUES);
	__type(key, char[SS_COMM_LEN]);
	__type(value, __u8);
} filter_comms SEC(".maps");

/* key: see SS_PORT_KEY_KIND_SHIFT */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SS_MAX_FILTER_VALUES);
	__type(key, __u32);
	__type(value, __u8);
} filter_ports SEC(".maps");

/* uid -> SS_FV_* */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SS_MAX_FILTER_VALUES);
	__type(key, __u32);
	__type(value, __u8);
} filter_uids SEC(".maps");

/* cgroup v2 id -> SS_FV_*: the socket's cgroup or any of its ancestors */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SS_MAX_FILTER_VALUES);
	__type(key, __u64);
	__type(value, __u8);
} filter_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, SS_MAX_FILTER_VALUES);
	__type(key, struct filter_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} filter_addrs SEC(".maps");

/*
 * The context a hit of inet_sock_set_state runs in: 0 in a task (a system
 * call, or ksoftirqd), 1 in a softirq that interrupted one. Told by where the
 * kernel put the hit's arguments (ctx): on the current task's stack, or on the
 * CPU's interrupt stack, where x86-64 runs softirqs (not our own frame: BPF
 * programs may have a private stack). Hits of one level never interleave on a
 * CPU: a task is not preempted inside a tracepoint, and a softirq does not
 * interrupt a softirq. THREAD_SIZE is 16K on x86-64 (32K with KASAN).
 * On PREEMPT_RT softirqs run in threads, on their own task stack: every hit
 * is level 0 there, which is right, since nothing then interrupts a
 * tracepoint (it runs with preemption off, and no softirq runs inside it).
 *
 * ctx is only compared, never subtracted from: older verifiers (6.1) refuse
 * arithmetic on the ctx pointer.
 */
static __always_inline int context_level(const void *ctx)
{
	__u64 base;

	/* bpf_get_current_task_btf: 5.11; the branch not taken is removed at load time */
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_get_current_task_btf))
		base = (__u64)bpf_get_current_task_btf()->stack;
	else
		base = (__u64)BPF_CORE_READ((struct task_struct *)bpf_get_current_task(), stack);

	return (__u64)ctx >= base && (__u64)ctx < base + SS_THREAD_SIZE ? 0 : 1;
}

static __always_inline __u32 states_of(int oldstate, int newstate)
{
	return (oldstate & 0xff) << 8 | (newstate & 0xff);
}

/*
 * Per-CPU, but atomic all the same: another of our programs can interrupt
 * this one on the same CPU (a softirq's reset inside a state change) and
 * count on the same slot.
 */
static __always_inline struct cpu_state *enter(void)
{
	__u32 zero = 0;
	struct cpu_state *cs = bpf_map_lookup_elem(&cpu_states, &zero);

	if (cs)
		cs->depth++; /* an interruption restores it before we go on: no atomics needed */
	return cs;
}

static __always_inline void leave(struct cpu_state *cs)
{
	if (cs)
		cs->depth--;
}

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &idx);

	if (v)
		__sync_fetch_and_add(v, 1);
}

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

static __always_inline bool fill_addrs(struct event *e, const struct sock_common *skc)
{
	__u16 family = skc->skc_family;

	/*
	 * An IPv4 connection on a dual-stack IPv6 socket: the IPv4 fields are
	 * right from the start, while the IPv6 copy of the local address is
	 * filled in only after connect() has made the socket SYN_SENT.
	 */
	if (family == AF_INET6 && skc->skc_v6_daddr.in6_u.u6_addr32[0] == 0 &&
	    skc->skc_v6_daddr.in6_u.u6_addr32[1] == 0 &&
	    skc->skc_v6_daddr.in6_u.u6_addr32[2] == bpf_htonl(0x0000ffff))
		family = AF_INET;

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

/* the socket's cgroup v2 id, 0 if none: struct event.cgroup, struct conn_record.cgroup */
static __always_inline __u64 cgroup_of(const struct sock *sk)
{
	return cgroup_id_at(sock_cgroup(sk));
}

/*
 * The cgroup filters (--cgroup, --unit, --container and their --exclude-):
 * the socket's cgroup is in a filter cgroup's subtree when its ancestor at
 * that cgroup's depth is that cgroup. Only the depths a filter names are
 * looked at (cgroup_levels). Cgroups made after start are judged the same
 * way: nothing is fixed but the filter cgroups themselves.
 */
static __always_inline bool cgroup_passes(__u64 cg, __u32 f)
{
	bool included = false;
	int level;
	__u64 off;

	if (!cg)
		return !(f & SS_FILT_CGROUP);
	if (bpf_core_field_exists(struct cgroup, ancestors)) {
		level = BPF_CORE_READ((struct cgroup *)cg, level);
		off = bpf_core_field_offset(struct cgroup, ancestors);
	} else {
		level = BPF_CORE_READ((struct cgroup___old *)cg, level);
		off = bpf_core_field_offset(struct cgroup___old, ancestor_ids);
	}
#pragma clang loop unroll(disable)
	for (int i = 0; i < SS_CGROUP_LEVELS; i++) {
		__u64 id = 0, anc = 0;
		__u8 *v;

		if (i > level)
			break;
		if (!(cgroup_levels & (1u << i)))
			continue;
		if (bpf_core_field_exists(struct cgroup, ancestors)) {
			bpf_probe_read_kernel(&anc, sizeof(anc), (void *)(cg + off + i * sizeof(anc)));
			id = cgroup_id_at(anc);
		} else {
			bpf_probe_read_kernel(&id, sizeof(id), (void *)(cg + off + i * sizeof(id)));
		}
		v = bpf_map_lookup_elem(&filter_cgroups, &id);
		if (!v)
			continue;
		if (*v & SS_FV_EXCLUDE)
			return false;
		if (*v & SS_FV_INCLUDE)
			included = true;
	}
	return included || !(f & SS_FILT_CGROUP);
}

/* struct event.cgroup, and the verdict of the cgroup filters for passes_filters() (SS_F_CGROUP_IN) */
static __always_inline void fill_cgroup(struct event *e, const struct sock *sk)
{
	if (want_cgroup)
		e->cgroup = cgroup_of(sk);
	if ((filter_flags & (SS_FILT_CGROUP | SS_FILT_X_CGROUP)) && cgroup_passes(sock_cgroup(sk), filter_flags))
		e->flags |= SS_F_CGROUP_IN;
}

static __always_inline void set_current_owner(struct owner *o)
{
	/*
	 * Zeroed first: before Linux 6.x (6.1 included) bpf_get_current_comm()
	 * does not pad after the NUL, and the bytes left over would make the
	 * name differ as a key of filter_comms (found by the 6.1 kernel tests).
	 */
	__builtin_memset(o, 0, sizeof(*o));
	o->pid = bpf_get_current_pid_tgid() >> 32;
	o->uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(o->comm, sizeof(o->comm));
}

static __always_inline void listen_key_of(struct listen_key *k, const struct sock *sk)
{
	__u16 family = sk->__sk_common.skc_family;

	__builtin_memset(k, 0, sizeof(*k));
	k->netns = netns_of(sk);
	k->port = sk->__sk_common.skc_num;
	k->family = family == AF_INET6 ? 6 : 4;
	if (family == AF_INET6)
		copy_v6(k->addr, &sk->__sk_common.skc_v6_rcv_saddr);
	else
		*(__u32 *)k->addr = sk->__sk_common.skc_rcv_saddr;
}

/* The listener of a passively opened socket: by its address, else the wildcard. */
static __always_inline struct owner *listener_owner(const struct sock *sk)
{
	struct listen_key k;
	struct owner *o;

	listen_key_of(&k, sk);
	o = bpf_map_lookup_elem(&listeners, &k);
	if (o)
		return o;
	__builtin_memset(k.addr, 0, sizeof(k.addr));
	return bpf_map_lookup_elem(&listeners, &k);
}

static __always_inline void copy_owner(struct event *e, const struct owner *o, __u8 how)
{
	e->pid = o->pid;
	e->uid = o->uid;
	__builtin_memcpy(e->comm, o->comm, SS_COMM_LEN);
	e->owner = how;
}

/*
 * The state we keep for a full socket (RE: request and timewait sockets are
 * smaller, and have none), made on its first event when create is set.
 */
static __always_inline struct sock_state *state_of(const struct sock *sk, bool create)
{
	struct sock_state *st;

	if (use_hash_storage) {
		__u64 key = (__u64)sk;

		st = bpf_map_lookup_elem(&sock_states_hash, &key);
		if (!st && create) {
			struct sock_state zero = {};

			bpf_map_update_elem(&sock_states_hash, &key, &zero, BPF_NOEXIST);
			st = bpf_map_lookup_elem(&sock_states_hash, &key);
		}
	} else {
		st = bpf_sk_storage_get(&sock_states, (void *)sk, NULL, create ? BPF_SK_STORAGE_GET_F_CREATE : 0);
	}
	if (!st && create)
		count(SS_C_STORAGE_FAILED);
	return st;
}

static __always_inline void own(struct sock_state *st, const struct owner *o, __u8 how)
{
	st->owner = *o;
	st->how = how;
	st->flags |= SS_S_OWNED;
}

/*
 * pid/comm of the socket's owner where known (its state, or what user space
 * found in /proc, which moves into its state), else of the current task
 */
static __always_inline void fill_owner(struct event *e, const struct sock *sk, struct sock_state *st)
{
	struct owner cur;

	if (st && (st->flags & SS_S_OWNED)) {
		copy_owner(e, &st->owner, st->how);
		return;
	}
	if (sk) {
		__u64 key = (__u64)sk;
		struct owner *o = bpf_map_lookup_elem(&owners, &key);

		if (o) {
			copy_owner(e, o, SS_OWNER_SOCKET);
			if (st) {
				own(st, o, SS_OWNER_SOCKET);
				bpf_map_delete_elem(&owners, &key);
			}
			return;
		}
	}
	set_current_owner(&cur);
	copy_owner(e, &cur, SS_OWNER_CURRENT);
	if (sk)
		e->ino = inode_of(sk);
}

/*
 * pid/comm of the listener that sk (a request socket, or the listener itself)
 * answers for, else of the current task (no inode: a request socket has none)
 */
static __always_inline void fill_listener_owner(struct event *e, const struct sock *sk)
{
	struct owner *o = listener_owner(sk);

	if (o)
		copy_owner(e, o, SS_OWNER_LISTENER);
	else
		fill_owner(e, NULL, NULL);
}

static __always_inline bool addr_unspecified(const __u8 *a, __u8 family)
{
	const __u32 *w = (const __u32 *)a;

	if (family == 4)
		return w[0] == 0;
	return (w[0] | w[1] | w[2] | w[3]) == 0;
}

static __always_inline bool port_in(__u32 kind, __u16 port)
{
	__u32 k = (kind << SS_PORT_KEY_KIND_SHIFT) | port;

	return bpf_map_lookup_elem(&filter_ports, &k) != NULL;
}

static __always_inline bool addr_in(__u8 kind, __u8 family, const __u8 *addr)
{
	struct filter_key k = {};

	k.prefixlen = SS_FILTER_KEY_PREFIX_BITS + (family == 4 ? 32 : 128);
	k.kind = kind;
	k.family = family;
	__builtin_memcpy(k.addr, addr, 16);
	return bpf_map_lookup_elem(&filter_addrs, &k) != NULL;
}

/* a filter set of values (filter_pids, filter_comms, filter_uids): include and exclude */
static __always_inline bool value_passes(void *map, const void *key, __u32 f, __u32 inc, __u32 exc)
{
	__u8 *v;

	if (!(f & (inc | exc)))
		return true;
	v = bpf_map_lookup_elem(map, key);
	if ((f & inc) && !(v && (*v & SS_FV_INCLUDE)))
		return false;
	if ((f & exc) && v && (*v & SS_FV_EXCLUDE))
		return false;
	return true;
}

#define SS_FILT_OWNER (SS_FILT_PID | SS_FILT_COMM | SS_FILT_UID | SS_FILT_X_PID | SS_FILT_X_COMM | SS_FILT_X_UID)

/*
 * true: the event passes every filter. Within a kind values are OR-ed, across kinds AND-ed; a value in an
 * exclusion (--exclude-*) drops the event whatever else matches.
 */
static __always_inline bool passes_filters(struct event *e)
{
	__u32 f = filter_flags;

	if (!f)
		return true;
	if (f & (SS_FILT_CGROUP | SS_FILT_X_CGROUP)) {
		bool in = e->flags & SS_F_CGROUP_IN;

		e->flags &= ~SS_F_CGROUP_IN; /* the kernel's own: user space never sees it */
		if (!in)
			return false;
	}
	if ((f & SS_FILT_SKIP_UNSPEC) &&
	    (addr_unspecified(e->saddr, e->family) || addr_unspecified(e->daddr, e->family)))
		return false;
	if ((f & SS_FILT_IPV4) && e->family != 4)
		return false;
	if ((f & SS_FILT_IPV6) && e->family != 6)
		return false;
	if ((f & SS_FILT_NO_RETRANSMIT) && e->type == SS_EV_RETRANSMIT)
		return false;
	if ((f & SS_FILT_NO_RESET) &&
	    (e->type == SS_EV_RESET_SENT || e->type == SS_EV_RESET_RECEIVED))
		return false;
	if ((f & SS_FILT_STATE) && e->type != SS_EV_CONNECTION && !(filter_states & (1u << (e->newstate & 31))))
		return false;
	if ((f & SS_FILT_PORT) && !port_in(SS_ADDR_EITHER, e->sport) &&
	    !port_in(SS_ADDR_EITHER, e->dport))
		return false;
	if ((f & SS_FILT_SPORT) && !port_in(SS_ADDR_SRC, e->sport))
		return false;
	if ((f & SS_FILT_DPORT) && !port_in(SS_ADDR_DST, e->dport))
		return false;
	if ((f & SS_FILT_ADDR) && !addr_in(SS_ADDR_EITHER, e->family, e->saddr) &&
	    !addr_in(SS_ADDR_EITHER, e->family, e->daddr))
		return false;
	if ((f & SS_FILT_SRC) && !addr_in(SS_ADDR_SRC, e->family, e->saddr))
		return false;
	if ((f & SS_FILT_DST) && !addr_in(SS_ADDR_DST, e->family, e->daddr))
		return false;
	if ((f & SS_FILT_X_PORT) && (port_in(SS_ADDR_EXCLUDE, e->sport) || port_in(SS_ADDR_EXCLUDE, e->dport)))
		return false;
	if ((f & SS_FILT_X_ADDR) && (addr_in(SS_ADDR_EXCLUDE, e->family, e->saddr) ||
				     addr_in(SS_ADDR_EXCLUDE, e->family, e->daddr)))
		return false;
	if (f & SS_FILT_OWNER) {
		bool ok = value_passes(&filter_pids, &e->pid, f, SS_FILT_PID, SS_FILT_X_PID) &&
			  value_passes(&filter_comms, e->comm, f, SS_FILT_COMM, SS_FILT_X_COMM) &&
			  value_passes(&filter_uids, &e->uid, f, SS_FILT_UID, SS_FILT_X_UID);

		if (e->owner == SS_OWNER_CURRENT && e->ino) {
			/* a socket older than us: user space knows its owner from /proc */
			e->flags |= SS_F_OWNER_UNVERIFIED;
			return true;
		}
		return ok;
	}
	return true;
}

/* cs: this CPU's state, from enter(): are we running inside another of our programs? */
static __always_inline int emit(void *ctx, struct event *e, const struct cpu_state *cs)
{
	long err;

	normalize_family(e);
	if (summary_only || !passes_filters(e)) { /* --summary-only: connection records, no events */
		count(SS_C_FILTERED);
		return 0;
	}
	if (use_perf) {
		/* each CPU's perf buffer takes nested writes */
		err = bpf_perf_event_output(ctx, &perf_events, BPF_F_CURRENT_CPU, e, sizeof(*e));
	} else if (cs && cs->depth > 1) {
		err = bpf_ringbuf_output(&events_spare, e, sizeof(*e), BPF_RB_NO_WAKEUP);
		if (err) /* the other ring as a rescue */
			err = bpf_ringbuf_output(&events, e, sizeof(*e), 0);
	} else {
		__u64 flags = 0;

		if (wakeup_bytes) {
			/*
			 * Wake the reader when the unread data crosses the mark,
			 * and each further multiple of it: a wake-up is costly, and
			 * a reader that is awake reads everything anyway. Below the
			 * mark the reader finds the data on its own within its poll
			 * interval. Not the mark alone: two CPUs that read the same
			 * `avail` just below it both pass it over, and the reader
			 * would sleep out its poll interval with the ring filling.
			 */
			__u64 avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
			__u64 rec = sizeof(*e) + 8; /* + the record header */

			flags = avail / wakeup_bytes != (avail + rec) / wakeup_bytes ? BPF_RB_FORCE_WAKEUP
										    : BPF_RB_NO_WAKEUP;
		}
		err = bpf_ringbuf_output(&events, e, sizeof(*e), flags);
		/*
		 * A write can fail with room to spare: the ring's lock (a
		 * resilient spinlock in recent kernels) gives up rather than
		 * risk a deadlock. Try the other ring before counting it lost.
		 */
		if (err)
			err = bpf_ringbuf_output(&events_spare, e, sizeof(*e), BPF_RB_NO_WAKEUP);
	}
	count(err ? SS_C_LOST : SS_C_SENT);
	return 0;
}

/* transitions that only a system call of the socket's owner makes */
static __always_inline bool by_owner_syscall(int oldstate, int newstate)
{
	return newstate == TCP_SYN_SENT ||				 /* connect() */
	       newstate == TCP_LISTEN ||				 /* listen() */
	       (oldstate == TCP_ESTABLISHED && newstate == TCP_FIN_WAIT1) || /* close/shutdown */
	       (oldstate == TCP_CLOSE_WAIT && newstate == TCP_LAST_ACK) ||   /* close/shutdown */
	       (oldstate == TCP_LISTEN && newstate == TCP_CLOSE);		 /* close() a listener */
	/* not SYN_SENT -> CLOSE: a refused or timed-out connect ends there in softirq context */
}

/* A connection's life begins: connect() or listen() on a closed socket, or a socket accepted from a listener. */
static __always_inline void begin(struct sock_state *st, int oldstate, int newstate, __u64 now)
{
	if (oldstate == TCP_CLOSE || oldstate == TCP_LISTEN) {
		/* an accepted socket starts as a copy of its listener's state (BPF_F_CLONE): keep only the owner */
		bool child = oldstate == TCP_LISTEN;

		st->flags = child ? st->flags & SS_S_OWNED : 0;
		st->how = SS_OWNER_LISTENER;
		st->start_ns = now;
		st->handshake_ns = 0;
		st->states = 0;
		st->nstates = 0;
		st->seen = 0;
		st->err = 0;
		st->direction = newstate == TCP_SYN_SENT ? SS_DIR_OUT : child ? SS_DIR_IN : SS_DIR_UNKNOWN;
	} else if (!st->start_ns && !st->nstates) {
		st->flags |= SS_R_INCOMPLETE; /* first seen in the middle of its life: older than us */
	}
}

static __always_inline __u32 srtt_us_of(const struct tcp_sock *tp)
{
	return BPF_CORE_READ(tp, srtt_us) >> 3;
}

/* the state's history: the first SS_MAX_STATES - 1 states and the last one */
static __always_inline void note_state(struct sock_state *st, const struct sock *sk, int newstate, __u64 now)
{
	__u8 n = st->nstates;
	__u64 nib = (__u64)(newstate & 0xf);

	if (n < SS_MAX_STATES) {
		st->states |= nib << (4 * n);
		st->nstates = n + 1;
	} else {
		st->states = (st->states & ~(0xfULL << (4 * (SS_MAX_STATES - 1)))) | nib << (4 * (SS_MAX_STATES - 1));
		st->flags |= SS_R_STATES_CUT;
	}
	st->seen |= 1 << (newstate & 15);
	if (newstate == TCP_ESTABLISHED && !st->handshake_ns) {
		if (st->direction == SS_DIR_OUT)
			st->handshake_ns = now - st->start_ns; /* SYN sent -> SYN-ACK answered */
		else if (st->direction == SS_DIR_IN) /* SYN-ACK sent -> its ACK: the first round trip measured */
			st->handshake_ns = (__u64)srtt_us_of((const struct tcp_sock *)sk) * 1000;
	}
}

#define SEEN(state) (1 << (state))

/* Why the connection ended, at its CLOSE. */
static __always_inline __u8 result_of(const struct sock *sk, const struct sock_state *st, int oldstate)
{
	int err = BPF_CORE_READ(sk, sk_err);
	__u8 f = st ? st->flags : 0;

	/*
	 * A connect that failed on an ICMP error: the kernel keeps it as a soft
	 * error, connect() or SO_ERROR takes it (and clears it), then close()
	 * ends the socket with no error left: on_error_report kept it for us.
	 */
	if (!err && oldstate == TCP_SYN_SENT)
		err = st && st->err ? st->err : BPF_CORE_READ(sk, sk_err_soft);
	if (err == ECONNREFUSED)
		return SS_RESULT_REFUSED;
	if (err == ETIMEDOUT)
		return SS_RESULT_TIMEOUT;
	if (err == EHOSTUNREACH || err == ENETUNREACH)
		return SS_RESULT_UNREACHABLE;
	if (err == ECONNRESET || err == EPIPE || (f & SS_S_RESET_RECEIVED))
		return SS_RESULT_RESET_RECEIVED;
	if (f & SS_S_RESET_SENT)
		return SS_RESULT_RESET_SENT;

	/*
	 * An abort: the kernel sends the reset right after this change
	 * (tcp_disconnect for SO_LINGER 0, tcp_close with unread data,
	 * tcp_abort, a listener's unaccepted children).
	 */
	if (oldstate == TCP_ESTABLISHED || oldstate == TCP_CLOSE_WAIT || oldstate == TCP_FIN_WAIT1 ||
	    oldstate == TCP_SYN_RECV)
		return SS_RESULT_RESET_SENT;
	return SS_RESULT_CLOSED;
}

/* The connection's record, at its CLOSE. e: its last event (normalized, owner filled). */
static __always_inline void record(void *ctx, const struct sock *sk, const struct sock_state *st, struct event *e,
				   int oldstate, const struct cpu_state *cs)
{
	const struct tcp_sock *tp = (const struct tcp_sock *)sk;
	struct conn_record r = {};
	__u64 acked, received;
	__u16 seen = 0;
	long err;

	r.result = result_of(sk, st, oldstate);
	e->type = SS_EV_CONNECTION; /* for the filters */
	if (filter_flags & (SS_FILT_CGROUP | SS_FILT_X_CGROUP))
		fill_cgroup(e, sk); /* passes_filters() took the event's verdict */
	if ((filter_flags & SS_FILT_FAILED) && r.result == SS_RESULT_CLOSED) {
		count(SS_C_RECORDS_FILTERED);
		return;
	}
	if (!passes_filters(e)) {
		count(SS_C_RECORDS_FILTERED);
		return;
	}
	r.ts_ns = e->ts_ns;
	r.skaddr = e->skaddr;
	r.netns = e->netns;
	r.ino = e->ino;
	r.owner = e->owner;
	r.flags = e->flags & SS_F_OWNER_UNVERIFIED ? SS_R_OWNER_UNVERIFIED : 0;
	/* identity: pid .. family, the same bytes as the event's */
	__builtin_memcpy(&r.pid, &e->pid, offsetof(struct event, pad2) - offsetof(struct event, pid));
	if (st) {
		r.start_ns = st->start_ns;
		r.handshake_ns = st->handshake_ns;
		r.states = st->states;
		r.nstates = st->nstates;
		r.direction = st->direction;
		r.flags |= st->flags & (SS_R_INCOMPLETE | SS_R_STATES_CUT);
		seen = st->seen;
	} else {
		r.flags |= SS_R_INCOMPLETE;
	}
	r.uid = e->uid;
	r.cgroup = cgroup_of(sk);
	r.retransmits = BPF_CORE_READ(tp, total_retrans);
	r.rtt_us = srtt_us_of(tp);
	/*
	 * Payload bytes: bytes_acked counts our SYN (when we connected) and our
	 * FIN (once acknowledged) as a byte each, bytes_received the peer's FIN
	 * (not its SYN: rcv_nxt starts past it).
	 */
	acked = BPF_CORE_READ(tp, bytes_acked);
	received = BPF_CORE_READ(tp, bytes_received);
	if (r.direction == SS_DIR_OUT && (seen & SEEN(TCP_ESTABLISHED)) && acked)
		acked--;
	if ((seen & (SEEN(TCP_FIN_WAIT1) | SEEN(TCP_LAST_ACK))) && acked &&
	    BPF_CORE_READ(tp, snd_una) == BPF_CORE_READ(tp, write_seq))
		acked--;
	/* the peer's FIN came to this socket (tcp_fin() sets SOCK_DONE; an orphan may be in timewait by then) */
	if (received && (BPF_CORE_READ(sk, __sk_common.skc_flags) & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE))))
		received--;
	r.bytes_sent = acked;
	r.bytes_received = received;
	/*
	 * No wake-up: the reader waits on `events` (woken at its fill mark) and
	 * reads the records each time it wakes, or every 0.1 s; a wake-up per
	 * record would cost the kernel work each time the reader has caught up.
	 */
	if (cs && cs->depth > 1) {
		err = bpf_ringbuf_output(&records_spare, &r, sizeof(r), BPF_RB_NO_WAKEUP);
		if (err)
			err = bpf_ringbuf_output(&records, &r, sizeof(r), BPF_RB_NO_WAKEUP);
	} else {
		err = bpf_ringbuf_output(&records, &r, sizeof(r), BPF_RB_NO_WAKEUP);
		if (err) /* RE-ENTRY, 2 */
			err = bpf_ringbuf_output(&records_spare, &r, sizeof(r), BPF_RB_NO_WAKEUP);
	}
	count(err ? SS_C_RECORDS_LOST : SS_C_RECORDS);
}

/* The socket's owner for a state change, recorded in its state when the owner itself made the change. */
static __always_inline void state_change_owner(struct event *e, const struct sock *sk, struct sock_state *st,
					       int oldstate, int newstate)
{
	struct owner *o;

	if (by_owner_syscall(oldstate, newstate)) {
		struct owner cur;

		set_current_owner(&cur);
		copy_owner(e, &cur, SS_OWNER_SOCKET);
		if (st)
			own(st, &cur, SS_OWNER_SOCKET);
		if (newstate == TCP_LISTEN) {
			struct listen_key lk;

			listen_key_of(&lk, sk);
			bpf_map_update_elem(&listeners, &lk, &cur, BPF_ANY);
		}
	} else if (st && (st->flags & SS_S_OWNED)) {
		copy_owner(e, &st->owner, st->how);
	} else if ((newstate == TCP_SYN_RECV || oldstate == TCP_SYN_RECV) && (o = listener_owner(sk))) {
		/* a passive open whose listener's state could not be cloned (older than us; before 5.11) */
		copy_owner(e, o, SS_OWNER_LISTENER);
		if (st)
			own(st, o, SS_OWNER_LISTENER);
	} else {
		fill_owner(e, sk, st);
	}
}

static __always_inline int state_change(void *ctx, const struct sock *sk, const int oldstate, const int newstate,
					const struct cpu_state *cs)
{
	struct event e = {};
	struct sock_state *st;

	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	e.ts_ns = bpf_ktime_get_ns(); /* when it happened: an event of a program inside us must sort after it */
	count(SS_C_SEEN);
	count(SS_C_SEEN_STATE);

	st = newstate == TCP_NEW_SYN_RECV ? NULL : state_of(sk, true); /* a request socket has none */
	if (st)
		begin(st, oldstate, newstate, e.ts_ns);
	state_change_owner(&e, sk, st, oldstate, newstate);

	e.type = SS_EV_STATE;
	e.oldstate = oldstate;
	e.newstate = newstate;
	e.skaddr = (__u64)sk;
	e.netns = netns_of(sk);
	fill_full_sock(&e, sk);
	fill_cgroup(&e, sk);
	if (st)
		note_state(st, sk, newstate, e.ts_ns);

	emit(ctx, &e, cs);
	if (newstate == TCP_CLOSE) {
		__u64 key = (__u64)sk;

		if (oldstate == TCP_LISTEN) {
			/* SO_REUSEPORT: several listeners share a key; the entry is the last listen()er's */
			struct listen_key lk;
			struct owner *lo;

			listen_key_of(&lk, sk);
			lo = bpf_map_lookup_elem(&listeners, &lk);
			if (lo && lo->pid == e.pid)
				bpf_map_delete_elem(&listeners, &lk);
		} else if (!no_records && !use_perf) {
			record(ctx, sk, st, &e, oldstate, cs);
		}
		if (!st || !(st->flags & SS_S_OWNED))
			bpf_map_delete_elem(&owners, &key); /* what user space taught, if the socket had no event since */
		if (use_hash_storage)
			bpf_map_delete_elem(&sock_states_hash, &key);
	}
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_state_change, const struct sock *sk, const int oldstate, const int newstate)
{
	struct cpu_state *cs = enter();
	struct hit *h;

	if (!cs)
		return 0;
	/* this hit is taken: on_state_change_missed, which runs right after us for it, leaves it */
	h = &cs->taken[context_level(ctx)];
	h->sk = (__u64)sk;
	h->states = states_of(oldstate, newstate);
	state_change(ctx, sk, oldstate, newstate, cs);
	leave(cs);
	return 0;
}

/* takes the hits on_state_change was skipped for: RE-ENTRY, 1 */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_state_change_missed, const struct sock *sk, const int oldstate, const int newstate)
{
	__u32 zero = 0;
	struct cpu_state *cs = bpf_map_lookup_elem(&cpu_states, &zero);
	struct hit *h;
	bool taken;

	if (!cs)
		return 0;
	h = &cs->taken[context_level(ctx)];
	taken = h->sk == (__u64)sk && h->states == states_of(oldstate, newstate);
	h->sk = 0;
	if (taken)
		return 0;
	cs->depth++;
	count(SS_C_RESCUED);
	state_change(ctx, sk, oldstate, newstate, cs);
	leave(cs);
	return 0;
}

/* a retransmission or a reset received: sk is a full socket */
static __always_inline int sock_event(void *ctx, const struct sock *sk, __u8 type, const struct cpu_state *cs)
{
	struct sock_state *st = state_of(sk, false);
	struct event e = {};

	e.ts_ns = bpf_ktime_get_ns();
	e.type = type;
	e.skaddr = (__u64)sk;
	e.newstate = sk->__sk_common.skc_state;
	e.netns = netns_of(sk);
	if (st && type == SS_EV_RESET_RECEIVED)
		st->flags |= SS_S_RESET_RECEIVED;
	fill_owner(&e, sk, st);
	fill_full_sock(&e, sk);
	fill_cgroup(&e, sk);
	return emit(ctx, &e, cs);
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(on_retransmit, const struct sock *sk, const struct sk_buff *skb)
{
	/*
	 * Newer kernels trace failed attempts too, with a third argument
	 * (err) and a renamed event type: only a retransmission that was
	 * sent counts. Older kernels have two arguments: ctx[2] is then never
	 * read (the branch is pruned after relocation).
	 */
	if (bpf_core_field_exists(struct trace_event_raw_tcp_retransmit_skb, err) && ctx[2] != 0)
		return 0;
	struct cpu_state *cs = enter();

	count(SS_C_SEEN);
	count(SS_C_SEEN_RETRANSMIT);
	sock_event(ctx, sk, SS_EV_RETRANSMIT, cs);
	leave(cs);
	return 0;
}

/*
 * A server's SYN-ACK sent again: the handshake's last ACK did not come (a
 * lost packet, a client gone, a SYN flood). sk is the listener; the
 * connection is still a request socket, whose common part holds its
 * addresses. Its owner is the listener's.
 */
static __always_inline int synack_retransmit(void *ctx, const struct sock *sk, const struct request_sock *req,
					     const struct cpu_state *cs)
{
	struct event e = {};

	e.ts_ns = bpf_ktime_get_ns();
	count(SS_C_SEEN);
	count(SS_C_SEEN_RETRANSMIT);
	e.type = SS_EV_RETRANSMIT;
	e.skaddr = (__u64)req;
	e.newstate = TCP_NEW_SYN_RECV;
	e.netns = netns_of(sk);
	if (!fill_addrs(&e, &req->__req_common))
		return 0;
	e.sport = req->__req_common.skc_num; /* the listener's port, in host order */
	fill_listener_owner(&e, sk);
	fill_cgroup(&e, sk); /* the listener's */
	return emit(ctx, &e, cs);
}

SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(on_synack_retransmit, const struct sock *sk, const struct request_sock *req)
{
	struct cpu_state *cs = enter();

	synack_retransmit(ctx, sk, req, cs);
	leave(cs);
	return 0;
}

/*
 * An error reported to the socket's owner: kept for the connection's record
 * (see result_of). An ICMP error for a connecting socket that connect() holds
 * is queued for its owner (this report) before the kernel keeps it as a soft
 * error, which connect() or SO_ERROR then takes and clears: with neither
 * error set yet, it is one of those, a destination unreachable.
 */
SEC("tp_btf/inet_sk_error_report")
int BPF_PROG(on_error_report, const struct sock *sk)
{
	struct sock_state *st;
	int err;

	if (sk->sk_protocol != IPPROTO_TCP || no_records)
		return 0;
	st = state_of(sk, false);
	if (!st)
		return 0;
	err = BPF_CORE_READ(sk, sk_err);
	if (!err)
		err = BPF_CORE_READ(sk, sk_err_soft);
	if (!err && sk->__sk_common.skc_state == TCP_SYN_SENT)
		err = EHOSTUNREACH;
	if (err)
		st->err = err;
	return 0;
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(on_reset_received, const struct sock *sk)
{
	struct cpu_state *cs = enter();

	count(SS_C_SEEN);
	count(SS_C_SEEN_RESET_RECEIVED);
	sock_event(ctx, sk, SS_EV_RESET_RECEIVED, cs);
	leave(cs);
	return 0;
}

/*
 * A reset we send answers a packet (skb): its addresses are the connection's,
 * seen from the other side. sk is NULL when no socket matched the packet,
 * and may be a timewait or request socket, so the packet is read first.
 */
static __always_inline bool fill_from_packet(struct event *e, const struct sk_buff *skb)
{
	unsigned char *head = skb->head;
	__u16 proto = bpf_ntohs(skb->protocol);
	__u16 nh = skb->network_header;
	__u16 th = skb->transport_header;
	struct tcphdr tcp;

	if (proto == ETH_P_IP) {
		struct iphdr ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh))
			return false;
		e->family = 4;
		__builtin_memcpy(e->saddr, &ip.daddr, 4);
		__builtin_memcpy(e->daddr, &ip.saddr, 4);
	} else if (proto == ETH_P_IPV6) {
		struct ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh))
			return false;
		e->family = 6;
		__builtin_memcpy(e->saddr, &ip6.daddr, 16);
		__builtin_memcpy(e->daddr, &ip6.saddr, 16);
	} else {
		return false;
	}
	if (bpf_probe_read_kernel(&tcp, sizeof(tcp), head + th))
		return false;
	e->sport = bpf_ntohs(tcp.dest);
	e->dport = bpf_ntohs(tcp.source);
	return true;
}

static __always_inline int reset_sent(void *ctx, const struct sock *sk, const struct sk_buff *skb,
				      const struct cpu_state *cs)
{
	struct event e = {};

	e.ts_ns = bpf_ktime_get_ns();
	count(SS_C_SEEN);
	count(SS_C_SEEN_RESET_SENT);
	e.type = SS_EV_RESET_SENT;
	e.skaddr = (__u64)sk;
	if (skb) {
		if (!fill_from_packet(&e, skb))
			return 0;
	} else if (!sk || !fill_full_sock(&e, sk)) {
		return 0;
	}
	if (!sk) {
		e.owner = SS_OWNER_NONE; /* the kernel answered for no process: pid 0, no comm */
		if (skb && skb->dev)
			e.netns = skb->dev->nd_net.net->ns.inum;
		fill_cgroup(&e, NULL);
		return emit(ctx, &e, cs);
	}
	e.newstate = sk->__sk_common.skc_state;
	e.netns = netns_of(sk);
	if (e.newstate == TCP_TIME_WAIT) {
		/* a timewait socket: its process has closed it, nobody owns it now */
		e.owner = SS_OWNER_NONE;
		fill_cgroup(&e, NULL);
	} else if (e.newstate == TCP_NEW_SYN_RECV) {
		fill_listener_owner(&e, sk); /* a request socket (handshake not done) */
		fill_cgroup(&e, sk->__sk_common.skc_listener);
	} else {
		/* a full socket (request and timewait ones are smaller: no sk_socket to read) */
		struct sock_state *st = state_of(sk, false);

		if (st)
			st->flags |= SS_S_RESET_SENT;
		fill_owner(&e, sk, st);
		fill_cgroup(&e, sk);
	}
	return emit(ctx, &e, cs);
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(on_reset_sent, const struct sock *sk, const struct sk_buff *skb)
{
	struct cpu_state *cs = enter();

	reset_sent(ctx, sk, skb, cs);
	leave(cs);
	return 0;
}

/*
 * Before 6.10, tcp_send_reset fires in tcp_v4_send_reset/tcp_v6_send_reset
 * only for a full socket: not for the reset that answers a packet no socket
 * took (a closed port), nor for one a timewait or request socket sends. These
 * two take exactly those, at the functions' entry; full sockets' resets stay
 * with the tracepoint, so no reset is taken twice. The loader loads them only
 * where the tracepoint lacks those resets and fentry works (kernel/loader.py).
 * At entry the reset is not sent yet: the checks the functions make before
 * they send are made here too (never a reset to a reset; without a socket,
 * only for a packet routed to this host). Not repeated: a TCP-MD5 signed
 * packet without a matching key also gets no reset.
 */
static __always_inline bool full_sock(const struct sock *sk)
{
	return (1 << sk->__sk_common.skc_state) & ~(TCPF_TIME_WAIT | TCPF_NEW_SYN_RECV);
}

static __always_inline bool answers_a_reset(const struct sk_buff *skb)
{
	__u8 flags = 0;

	bpf_probe_read_kernel(&flags, 1, skb->head + skb->transport_header + 13);
	return flags & TCP_FLAG_RST;
}

/* the packet's route, for a reset without a socket (skb_dst()) */
static __always_inline __u64 route_of(const struct sk_buff *skb)
{
	return skb->_skb_refdst & ~1UL; /* SKB_DST_PTRMASK */
}

SEC("fentry/tcp_v4_send_reset")
int BPF_PROG(on_reset_sent_v4, const struct sock *sk, struct sk_buff *skb)
{
	struct cpu_state *cs;

	if ((sk && full_sock(sk)) || answers_a_reset(skb))
		return 0;
	if (!sk && BPF_CORE_READ((struct rtable *)route_of(skb), rt_type) != RTN_LOCAL)
		return 0;
	cs = enter();
	reset_sent(ctx, sk, skb, cs);
	leave(cs);
	return 0;
}

SEC("fentry/tcp_v6_send_reset")
int BPF_PROG(on_reset_sent_v6, const struct sock *sk, struct sk_buff *skb)
{
	struct cpu_state *cs;

	if ((sk && full_sock(sk)) || answers_a_reset(skb))
		return 0;
	if (!sk && !(BPF_CORE_READ((struct rt6_info *)route_of(skb), rt6i_flags) & RTF_LOCAL))
		return 0;
	cs = enter();
	reset_sent(ctx, sk, skb, cs);
	leave(cs);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
