/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The per-connection record (struct conn_record): the life of a connection
 * kept in its socket's state as it goes (start, handshake, states), and the
 * record made of it at its CLOSE, with why it ended.
 */
#ifndef SOCKETSNOOP_RECORD_H
#define SOCKETSNOOP_RECORD_H

#include "defs.h"
#include "config.h"
#include "cpu.h"
#include "sock.h"
#include "owner.h"
#include "filters.h"
#include "rings.h"
#include "metrics.h"

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
		st->drops = 0; /* an accepted socket's copy holds its listener's */
		__builtin_memset(st->drop_slots, 0, sizeof(st->drop_slots));
		st->direction = newstate == TCP_SYN_SENT ? SS_DIR_OUT : child ? SS_DIR_IN : SS_DIR_UNKNOWN;
	} else if (!st->start_ns && !st->nstates) {
		st->flags |= SS_R_INCOMPLETE; /* first seen in the middle of its life: older than us */
	}
}

static __always_inline __u32 srtt_us_of(const struct tcp_sock *tp, const struct sock *sk)
{
	return TCP_READ(tp, sk, srtt_us) >> 3;
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
			st->handshake_ns = (__u64)srtt_us_of(tcp_sock_of(sk), sk) * 1000;
	}
}

#define SEEN(state) (1 << (state))

/* Why the connection ended, at its CLOSE. */
static __always_inline __u8 result_of(const struct sock *sk, const struct sock_state *st, int oldstate)
{
	int err = sk->sk_err;
	__u8 f = st ? st->flags : 0;

	/*
	 * A connect that failed on an ICMP error: the kernel keeps it as a soft
	 * error, connect() or SO_ERROR takes it (and clears it), then close()
	 * ends the socket with no error left: on_error_report kept it for us.
	 */
	if (!err && oldstate == TCP_SYN_SENT)
		err = st && st->err ? st->err : sk->sk_err_soft;
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
				   int oldstate, struct cpu_state *cs)
{
	const struct tcp_sock *tp = tcp_sock_of(sk);
	struct conn_record r = {};
	__u64 acked, received;
	__u16 seen = 0;

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
		r.drops = st->drops;
		__builtin_memcpy(r.drop_slots, st->drop_slots, sizeof(r.drop_slots));
	} else {
		r.flags |= SS_R_INCOMPLETE;
	}
	r.uid = e->uid;
	r.cgroup = cgroup_of(sk);
	r.retransmits = TCP_READ(tp, sk, total_retrans);
	r.rtt_us = srtt_us_of(tp, sk);
	/*
	 * Payload bytes: bytes_acked counts our SYN (when we connected) and our
	 * FIN (once acknowledged) as a byte each, bytes_received the peer's FIN
	 * (not its SYN: rcv_nxt starts past it).
	 */
	acked = TCP_READ(tp, sk, bytes_acked);
	received = TCP_READ(tp, sk, bytes_received);
	if (r.direction == SS_DIR_OUT && (seen & SEEN(TCP_ESTABLISHED)) && acked)
		acked--;
	if ((seen & (SEEN(TCP_FIN_WAIT1) | SEEN(TCP_LAST_ACK))) && acked &&
	    TCP_READ(tp, sk, snd_una) == TCP_READ(tp, sk, write_seq))
		acked--;
	/* the peer's FIN came to this socket (tcp_fin() sets SOCK_DONE; an orphan may be in timewait by then) */
	if (received && (sk->__sk_common.skc_flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE))))
		received--;
	r.bytes_sent = acked;
	r.bytes_received = received;
	if (kernel_metrics & SS_KM_RECORDS) { /* counted here, not sent (metrics.h) */
		metric_record(&r);
		count(SS_C_RECORDS);
		return;
	}
	count(submit_record(&r, cs) ? SS_C_RECORDS_LOST : SS_C_RECORDS);
}

/* The connection's counts at its CLOSE when counting alone (metrics.h: counting_alone()): record()'s
 * direction, times and round trip, without the record (result: result_of()'s). */
static __always_inline void count_record(const struct sock *sk, const struct sock_state *st, __u8 result, __u64 now)
{
	bool whole = st && st->start_ns && !(st->flags & SS_R_INCOMPLETE);

	metric_conn(st ? st->direction : SS_DIR_UNKNOWN, result, whole,
		    whole ? now - st->start_ns : 0, st ? st->handshake_ns : 0, srtt_us_of(tcp_sock_of(sk), sk));
	count(SS_C_RECORDS);
}

#endif /* SOCKETSNOOP_RECORD_H */
