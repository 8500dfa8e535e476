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
 * tcp_v4_send_reset / tcp_v6_send_reset); on_kfree_skb (kfree_skb: TCP
 * packets dropped, with the reason, where the kernel gives one).
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
 *     context_level()), the hit it took, with the address of the hit's
 *     arguments (ctx: the same for both programs of one hit, another for a
 *     hit of the other level); a hit recorded in neither slot was missed.
 *     Between the two programs only a deeper level can run, and it records
 *     in its own slot. This covers the kernel's own
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
 *   kfree_skb's reason argument                                5.17 (before: on_kfree_skb not loaded)
 *   kfree_skb's rx_sk argument                                 6.11 (before: the packet's socket only;
 *                                                                  user space sets drop_rx_sk by its BTF)
 * Tested: 5.10, 6.1, 6.1 PREEMPT_RT, 6.12 (tests/kernels/run), 6.18.
 *
 * Files, by job (each header includes what it uses; this file holds the
 * programs and the state change, reset and retransmission logic):
 *   socketsnoop.h  the contract with user space (mirrored in kernel/abi.py)
 *   defs.h         kernel constants vmlinux.h lacks (TCP states, errno)
 *   config.h       the read-only switches user space sets before load
 *   cpu.h          per-CPU nesting and context level (RE-ENTRY), counters
 *   sock.h         a socket's netns, addresses, ports, inode and cgroup
 *   owner.h        per-socket state and storage, owners, listeners
 *   filters.h      the filter maps and passes_filters()
 *   rings.h        the rings and the perf buffer, wake-up marks, emit()
 *   record.h       the per-connection record (struct conn_record)
 *   metrics.h      counting without transfer: the metrics kept in the kernel
 *   drops.h        packets dropped: which count, their socket, the counts
 * Built for x86-64 only (-D__TARGET_ARCH_x86; context_level() knows its
 * stacks; user space reads the rings with x86-64's memory ordering).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "socketsnoop.h"
#include "defs.h"
#include "config.h"
#include "cpu.h"
#include "sock.h"
#include "owner.h"
#include "filters.h"
#include "rings.h"
#include "record.h"
#include "metrics.h"
#include "drops.h"

/* keep struct event and struct conn_record in the object's BTF, where tests/unit/test_abi.py reads their layout */
const volatile struct event *unused_event __attribute__((unused));
const volatile struct conn_record *unused_record __attribute__((unused));

/* a change whose time the connection's record keeps: its start (begin()), its handshake (note_state()), its end */
static __always_inline bool timed(int oldstate, int newstate)
{
	return oldstate == TCP_CLOSE || oldstate == TCP_LISTEN || newstate == TCP_ESTABLISHED || newstate == TCP_CLOSE;
}

/*
 * A state change when counting alone (metrics.h: counting_alone()): the same counts and the same record
 * as state_change() below, without what nothing reads then (the owner, the namespace, the event but for
 * the filters' fields, a record's bytes). A listener's changes take the long way: its owner and its
 * entries in `listeners` are kept as always.
 */
static __always_inline void count_state_change(const struct sock *sk, const int oldstate, const int newstate)
{
	bool out = false, record_out = false;
	struct sock_state *st;
	__u64 now = 0;

	if (timed(oldstate, newstate))
		now = bpf_ktime_get_ns();
	count(SS_C_SEEN);
	count(SS_C_SEEN_STATE);
	st = newstate == TCP_NEW_SYN_RECV ? NULL : state_of(sk, true); /* a request socket has none */
	if (st) {
		begin(st, oldstate, newstate, now);
		note_state(st, sk, newstate, now);
	}
	if (filter_flags & ~SS_FILT_SKIP_UNSPEC) {
		/* filters the user gave: their fields, as state_change() and record() fill them */
		struct event e = {};

		e.type = SS_EV_STATE;
		e.oldstate = oldstate;
		e.newstate = newstate;
		fill_full_sock(&e, sk);
		fill_cgroup(&e, sk);
		normalize_family(&e);
		out = !passes_filters(&e);
		if (newstate == TCP_CLOSE) {
			e.type = SS_EV_CONNECTION;
			if (filter_flags & (SS_FILT_CGROUP | SS_FILT_X_CGROUP))
				fill_cgroup(&e, sk); /* passes_filters() took the event's verdict */
			record_out = !passes_filters(&e);
		}
	} else if (filter_flags & SS_FILT_SKIP_UNSPEC) {
		out = record_out = ends_unspecified(&sk->__sk_common);
	}
	if (out) {
		count(SS_C_FILTERED);
	} else {
		metric_event_of(SS_EV_STATE, newstate);
		count(SS_C_SENT);
	}
	if (newstate == TCP_CLOSE) {
		__u8 result = result_of(sk, st, oldstate);

		if (record_out || ((filter_flags & SS_FILT_FAILED) && result == SS_RESULT_CLOSED))
			count(SS_C_RECORDS_FILTERED);
		else
			count_record(sk, st, result, now);
		if (use_hash_storage) {
			__u64 key = (__u64)sk;

			bpf_map_delete_elem(&sock_states_hash, &key);
		}
	}
}

static __always_inline int state_change(void *ctx, const struct sock *sk, const int oldstate, const int newstate,
					struct cpu_state *cs)
{
	struct event e = {};
	struct sock_state *st;

	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	if (counting_alone() && oldstate != TCP_LISTEN && newstate != TCP_LISTEN) {
		count_state_change(sk, oldstate, newstate);
		return 0;
	}
	/*
	 * when it happened, read first: an event of a program inside us must sort after it. --summary-only
	 * sends no event but the CLOSE's record, and keeps only a connection's start and handshake: the
	 * clock (a tenth of such a hit) is not read for the other changes.
	 */
	if (!summary_only || timed(oldstate, newstate))
		e.ts_ns = bpf_ktime_get_ns();
	count(SS_C_SEEN);
	count(SS_C_SEEN_STATE);

	st = newstate == TCP_NEW_SYN_RECV ? NULL : state_of(sk, true); /* a request socket has none */
	if (st)
		begin(st, oldstate, newstate, e.ts_ns);
	state_change_owner(&e, sk, st, oldstate, newstate);
	if (summary_only && newstate != TCP_CLOSE) {
		/* no event leaves (--summary-only): only the record, at CLOSE, needs the event's fields */
		if (st)
			note_state(st, sk, newstate, e.ts_ns);
		count(SS_C_FILTERED);
		return 0;
	}

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
			bpf_map_delete_elem(&listen_drops, &lk);
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
	h->ctx = (__u64)ctx;
	h->states = states_of(oldstate, newstate);
	state_change(ctx, sk, oldstate, newstate, cs);
	leave(cs);
	return 0;
}

/* this hit, if on_state_change took it (in either level's slot: the same arguments at the same address) */
static __always_inline struct hit *taken_hit(struct cpu_state *cs, const void *ctx, __u64 sk, __u32 states)
{
	struct hit *h = &cs->taken[0];

	if (h->ctx == (__u64)ctx && h->sk == sk && h->states == states)
		return h;
	h = &cs->taken[1];
	if (h->ctx == (__u64)ctx && h->sk == sk && h->states == states)
		return h;
	return NULL;
}

/*
 * takes the hits on_state_change was skipped for: RE-ENTRY, 1. The hit on_state_change took is looked for
 * in both levels' slots, by its arguments' address too, rather than in its own level's: telling the level
 * costs a helper call and a read of the task (about 12 ns a hit), and between the two programs of a hit
 * only a deeper level runs, which writes the other slot, with another address.
 */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_state_change_missed, const struct sock *sk, const int oldstate, const int newstate)
{
	__u32 zero = 0;
	struct cpu_state *cs = bpf_map_lookup_elem(&cpu_states, &zero);
	struct hit *h;

	if (!cs)
		return 0;
	h = taken_hit(cs, ctx, (__u64)sk, states_of(oldstate, newstate));
	if (h) {
		h->sk = 0;
		return 0;
	}
	cs->depth++;
	count(SS_C_RESCUED);
	state_change(ctx, sk, oldstate, newstate, cs);
	leave(cs);
	return 0;
}

/* a retransmission or a reset received: sk is a full socket */
static __always_inline int sock_event(void *ctx, const struct sock *sk, __u8 type, struct cpu_state *cs)
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
					     struct cpu_state *cs)
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
				      struct cpu_state *cs)
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
		fill_cgroup_as(&e, sk->__sk_common.skc_listener, true); /* a scalar to the verifier */
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

/*
 * A packet the kernel dropped, with its reason (5.17+; user space loads this
 * only there). Filtered here: TCP only, and only real drops (real_drop()).
 * Counted per reason always, on its socket where the kernel knows it (the
 * connection's record), per listener for an accept queue overflow; sent as
 * an event only with --drops (drop_events), .ino carrying the reason. The
 * event's addresses are the socket's, else the packet's as received (local
 * is its destination); its owner the socket's or listener's as the kernel
 * program knows it, else none (pid 0): this runs in softirq context, where
 * the current task is not the owner.
 */
static __always_inline int drop(void *ctx, const struct sk_buff *skb, __u32 reason, const struct sock *rx_sk)
{
	const struct sock *sk;
	struct sock_state *st = NULL;
	struct cpu_state *cs;
	struct event e = {};
	bool listener;

	count(SS_C_DROPS);
	count_reason(reason);
	sk = drop_socket(rx_sk, skb);
	listener = sk && sk->__sk_common.skc_state == TCP_LISTEN;
	if (sk)
		st = state_of(sk, false);
	if (st)
		note_drop(st, reason);
	if (listener && bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_TCP_LISTEN_OVERFLOW) &&
	    reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_TCP_LISTEN_OVERFLOW))
		listen_overflow(sk, st);
	if (!drop_events)
		return 0;

	e.ts_ns = bpf_ktime_get_ns();
	e.type = SS_EV_DROP;
	e.ino = reason;
	e.skaddr = (__u64)sk;
	if (sk && !listener) {
		/* not fill_full_sock(): skb->sk is an RCU pointer, which bpf_skc_to_tcp_sock() refuses */
		if (!fill_addrs(&e, &sk->__sk_common))
			return 0;
		e.sport = bpf_ntohs(BPF_CORE_READ((const struct inet_sock *)sk, inet_sport)); /* (skc_num: 0 once closed) */
	} else if (!fill_from_packet(&e, skb)) {
		return 0;
	}
	e.owner = SS_OWNER_NONE;
	if (sk) {
		e.newstate = sk->__sk_common.skc_state;
		e.netns = netns_of(sk);
		if (st && (st->flags & SS_S_OWNED))
			copy_owner(&e, &st->owner, st->how);
		else if (listener)
			fill_listener_owner(&e, sk);
	} else if (skb->dev) {
		e.netns = skb->dev->nd_net.net->ns.inum;
	}
	if (e.owner == SS_OWNER_CURRENT) { /* fill_listener_owner's fallback, the interrupted task: not the owner */
		e.owner = SS_OWNER_NONE;
		e.pid = 0;
		e.uid = 0;
		__builtin_memset(e.comm, 0, SS_COMM_LEN);
	}
	fill_cgroup(&e, sk);
	count(SS_C_SEEN); /* an event made: seen, then sent, filtered or lost as any other */
	cs = enter();
	emit(ctx, &e, cs);
	leave(cs);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(on_kfree_skb, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	const struct sock *rx_sk = NULL;

	if (!real_drop(reason) || !tcp_packet(skb))
		return 0;
	if (drop_rx_sk) /* a fourth argument: never read where the kernel has none (pruned at load) */
		rx_sk = (const struct sock *)ctx[3];
	return drop(ctx, skb, reason, rx_sk);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
