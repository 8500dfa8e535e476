/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The one contract between the kernel program (socketsnoop.bpf.c and its
 * headers) and user space: every struct, enum, flag and size both sides use.
 * Its Python mirror is socketsnoop/kernel/abi.py; tests/unit/test_abi.py
 * fails on any difference (values parsed from this file, layouts from the
 * object's BTF).
 */
#ifndef SOCKETSNOOP_H
#define SOCKETSNOOP_H

#define SS_COMM_LEN 16 /* TASK_COMM_LEN */

/*
 * Sizes and limits. The ring sizes are defaults that user space replaces
 * before load (--buffer-size); the others are fixed.
 */
#define SS_RING_BYTES (4 << 20)		/* events: placeholder, user space sets --buffer-size */
#define SS_SPARE_RING_BYTES (1 << 20)	/* events_spare: placeholder, user space sets 1/8 of --buffer-size */
#define SS_MAX_OWNERS 65536		/* owners: sockets whose owner is followed at once (LRU beyond) */
#define SS_MAX_LISTENERS 8192		/* listeners: listening sockets at once (LRU beyond) */
#define SS_MAX_FILTER_VALUES 1024	/* each filter map: values of one filter kind */
#define SS_THREAD_SIZE 16384		/* x86-64 task stack (THREAD_SIZE; 32K with KASAN): context_level() */
#define SS_CONTEXT_LEVELS 2		/* struct cpu_state.taken: 0 a task, 1 a softirq (RE-ENTRY, 1) */
#define SS_CGROUP_LEVELS 32		/* cgroup filters: a filter cgroup's depth below the v2 root is less than this */
#define SS_DROP_REASONS 256		/* drop_reasons: one slot per drop reason value; larger values count in the last */
#define SS_DROP_SLOTS 3			/* a socket's drops: the first reasons seen, with their counts */

/* struct event.type */
enum ss_event_type {
	SS_EV_STATE = 1,	 /* inet_sock_set_state */
	SS_EV_RETRANSMIT = 2,	 /* tcp_retransmit_skb */
	SS_EV_RESET_SENT = 3,	 /* tcp_send_reset */
	SS_EV_RESET_RECEIVED = 4, /* tcp_receive_reset */
	SS_EV_CONNECTION = 5,	 /* a struct conn_record (its own ring; the type is for the filters) */
	SS_EV_DROP = 6,		 /* kfree_skb: a TCP packet the kernel dropped (--drops); .ino holds the reason */
};

/* struct event.owner: where pid/comm came from */
enum ss_owner {
	SS_OWNER_CURRENT = 0,	/* no owner known: the task the event ran in */
	SS_OWNER_SOCKET = 1,	/* recorded when the socket's owner made a syscall */
	SS_OWNER_LISTENER = 2,	/* passive open: the owner of the listening socket */
	SS_OWNER_NONE = 3,	/* nobody: a reset answering a closed port, or from a timewait socket: pid 0 */
};

/* struct event.flags */
#define SS_F_OWNER_UNVERIFIED 1 /* owner filters (pid, comm, uid) are on and the owner is a guess: user space re-checks */
/*
 * In the kernel only: the socket's cgroup passes the cgroup filters (set by fill_cgroup(), cleared by
 * passes_filters() before output). An event made without fill_cgroup() fails the cgroup filters.
 */
#define SS_F_CGROUP_IN 2

/* counters (a per-CPU array, index -> __u64) */
enum ss_counter {
	SS_C_SEEN = 0,		/* tracepoint hits that are TCP (of kfree_skb: the drops made events, --drops) */
	SS_C_FILTERED = 1,	/* dropped in the kernel by a filter (or as unspecified) */
	SS_C_SENT = 2,		/* written to the buffer */
	SS_C_LOST = 3,		/* buffer full: not written */
	SS_C_SEEN_STATE = 4,
	SS_C_SEEN_RETRANSMIT = 5,
	SS_C_SEEN_RESET_SENT = 6,
	SS_C_SEEN_RESET_RECEIVED = 7,
	SS_C_RESCUED = 8,	/* state changes on_state_change_missed took for on_state_change (RE-ENTRY, 1) */
	SS_C_RECORDS = 9,	/* connection records written */
	SS_C_RECORDS_LOST = 10,	/* connection records the rings refused */
	SS_C_RECORDS_FILTERED = 11, /* connection records left out by a filter (--failed included) */
	SS_C_STORAGE_FAILED = 12, /* per-socket state that could not be made (hash fallback full, or -EBUSY) */
	/* SS_C_LOST by kind (SS_C_SHED + type - SS_EV_STATE): the events shed when the reader fell behind */
	SS_C_SHED_STATE = 13,
	SS_C_SHED_RETRANSMIT = 14,
	SS_C_SHED_RESET_SENT = 15,
	SS_C_SHED_RESET_RECEIVED = 16,
	SS_C_SHED_DROP = 17,	/* SS_C_LOST of drop events (--drops) */
	SS_C_DROPS = 18,	/* TCP packets dropped with a reason (kfree_skb), counted whether or not sent */
	SS_C_MAX = 19,
};

/* struct filter_key.kind (the LPM trie of address filters) */
enum ss_addr_kind {
	SS_ADDR_EITHER = 1,
	SS_ADDR_SRC = 2,
	SS_ADDR_DST = 3,
	SS_ADDR_EXCLUDE = 4, /* --exclude-addr, --exclude-port: either end */
};

/* the value of an entry of filter_pids, filter_comms, filter_uids, filter_cgroups: which filter has it */
#define SS_FV_INCLUDE 1
#define SS_FV_EXCLUDE 2

/* filter switches, set in the read-only config before load */
#define SS_FILT_PID (1u << 0)
#define SS_FILT_COMM (1u << 1)
#define SS_FILT_PORT (1u << 2)
#define SS_FILT_SPORT (1u << 3)
#define SS_FILT_DPORT (1u << 4)
#define SS_FILT_ADDR (1u << 5)
#define SS_FILT_SRC (1u << 6)
#define SS_FILT_DST (1u << 7)
#define SS_FILT_STATE (1u << 8)
#define SS_FILT_IPV4 (1u << 9)	/* only IPv4 */
#define SS_FILT_IPV6 (1u << 10) /* only IPv6 */
#define SS_FILT_NO_RETRANSMIT (1u << 11)
#define SS_FILT_NO_RESET (1u << 12)
#define SS_FILT_SKIP_UNSPEC (1u << 13) /* skip 0.0.0.0 / :: at either end */
#define SS_FILT_X_PID (1u << 14)	/* --exclude-pid */
#define SS_FILT_X_COMM (1u << 15)
#define SS_FILT_X_PORT (1u << 16)
#define SS_FILT_X_ADDR (1u << 17)
#define SS_FILT_UID (1u << 18)
#define SS_FILT_X_UID (1u << 19)
#define SS_FILT_CGROUP (1u << 20)	/* --cgroup, --unit, --container: the socket's cgroup or an ancestor */
#define SS_FILT_X_CGROUP (1u << 21)
#define SS_FILT_FAILED (1u << 22)      /* connection records: only those whose result is not SS_RESULT_CLOSED */

/* struct sock_state.flags, beyond SS_R_*: what the record needs to know at CLOSE */
#define SS_S_RESET_SENT 16     /* a reset was sent on this socket */
#define SS_S_RESET_RECEIVED 32 /* a reset was received on this socket */
#define SS_S_OWNED 64	       /* .owner is set */

/*
 * One event, 112 bytes. Addresses are in network byte order; IPv4 uses the
 * first 4 bytes. family is 4 or 6; an IPv4-mapped IPv6 connection (a
 * dual-stack socket talking IPv4) is reported as 4. Ports are in host order.
 *
 * pid .. family are the connection's identity seen from one side, the same
 * bytes for most of its events: they are contiguous, so that user space
 * takes them as one string and makes their text once (abi.py: IDENT_FORMAT).
 * The program zeroes the whole struct first: no stray byte in them.
 */
struct event {
	__u64 ts_ns;	/* CLOCK_MONOTONIC */
	__u64 skaddr;	/* kernel socket address: identity of a connection */
	__u64 ino;	/* socket inode, 0 if none (not yet accepted, or gone) */
	__u32 netns;	/* network namespace inode */
	__u8 type;	/* enum ss_event_type */
	__u8 oldstate;	/* kernel TCP state number; 0 if none */
	__u8 newstate;	/* for retransmit/reset: the socket's current state */
	__u8 owner;	/* enum ss_owner */
	__u8 flags;
	__u8 pad[3];
	/* identity */
	__u32 pid;	/* owner tgid */
	__u16 sport;	/* local */
	__u16 dport;	/* remote */
	__u8 saddr[16]; /* local */
	__u8 daddr[16]; /* remote */
	char comm[SS_COMM_LEN];
	__u8 family;
	__u8 pad2[3];
	/* the owner's uid and the socket's cgroup: after the identity, which they do not change */
	__u32 uid;	/* the owner's (real) uid; 0 with SS_OWNER_NONE */
	__u32 pad3;
	__u64 cgroup;	/* the socket's cgroup v2 id (sk_cgrp_data: its creator's cgroup), 0 if none */
};

/* a drop reason (enum skb_drop_reason, the running kernel's values) and how often it was seen, saturating */
struct drop_slot {
	__u16 reason;
	__u16 count;
};

/* struct conn_record.result: why a connection ended */
enum ss_result {
	SS_RESULT_CLOSED = 1,	      /* an orderly close (FIN both ways, or our own close of an idle socket) */
	SS_RESULT_RESET_SENT = 2,     /* we sent a reset (SO_LINGER 0, data left unread, an abort) */
	SS_RESULT_RESET_RECEIVED = 3, /* the peer reset an established connection */
	SS_RESULT_REFUSED = 4,	      /* connect() answered by a reset: ECONNREFUSED */
	SS_RESULT_TIMEOUT = 5,	      /* no answer: ETIMEDOUT */
	SS_RESULT_UNREACHABLE = 6,    /* ICMP unreachable: EHOSTUNREACH or ENETUNREACH */
};

/* struct conn_record.direction */
enum ss_direction {
	SS_DIR_UNKNOWN = 0, /* the connection began before socket-snoop started */
	SS_DIR_OUT = 1,	    /* connected: we sent the SYN */
	SS_DIR_IN = 2,	    /* accepted */
};

/* struct conn_record.flags */
#define SS_R_INCOMPLETE 1 /* began before socket-snoop started: start, handshake and early states unknown */
#define SS_R_STATES_CUT 2 /* more states than SS_MAX_STATES: the first ones are kept, the last is CLOSE */
#define SS_R_OWNER_UNVERIFIED 4 /* as SS_F_OWNER_UNVERIFIED for events: user space re-checks pid/comm filters */

#define SS_MAX_STATES 16 /* struct conn_record.states: 4 bits per state */
#define SS_MAX_SOCKETS_HASH (1 << 20) /* sock_states_hash, kernels without socket storage for tracing (5.10) */
#define SS_RECORD_RING_BYTES (4 << 20) /* records: placeholder, user space sets it */


/*
 * One connection, when its full socket reaches CLOSE (for the side that
 * closes first: when it enters TIME_WAIT). 176 bytes. pid .. family are the
 * identity, as in struct event, in the same order.
 */
struct conn_record {
	__u64 ts_ns;	      /* when it ended (CLOCK_MONOTONIC) */
	__u64 skaddr;	      /* kernel socket address */
	__u64 start_ns;	      /* its first state change (0 if SS_R_INCOMPLETE) */
	__u64 handshake_ns;   /* SYN sent or received -> ESTABLISHED; 0 if it never got there */
	__u64 bytes_sent;     /* payload bytes the peer acknowledged (bytes_acked less SYN and FIN) */
	__u64 bytes_received; /* payload bytes received (bytes_received less SYN and FIN) */
	__u64 cgroup;	      /* the socket's cgroup v2 id (sk_cgrp_data), 0 if none */
	__u64 ino;	      /* socket inode when the owner is not known (SS_OWNER_CURRENT), else 0 */
	__u64 states;	      /* the new states it went through, 4 bits each, the first in the low bits */
	__u32 netns;
	__u32 retransmits;    /* segments retransmitted (total_retrans) */
	__u32 rtt_us;	      /* smoothed round-trip time, microseconds; 0 if none measured */
	__u32 uid;	      /* the owner's uid */
	__u8 result;	      /* enum ss_result */
	__u8 direction;	      /* enum ss_direction */
	__u8 nstates;	      /* states recorded in .states */
	__u8 flags;	      /* SS_R_* */
	__u8 owner;	      /* enum ss_owner */
	__u8 pad[3];
	/* identity */
	__u32 pid;
	__u16 sport;
	__u16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[SS_COMM_LEN];
	__u8 family;
	__u8 pad2[7];
	/* packets of this connection the kernel dropped (kfree_skb with a reason; 0 where it has none) */
	__u32 drops;
	struct drop_slot drop_slots[SS_DROP_SLOTS]; /* the first reasons seen, with their counts */
};

/* key of the LPM trie of address filters: prefixlen counts kind+family (SS_FILTER_KEY_PREFIX_BITS) + address bits */
#define SS_FILTER_KEY_PREFIX_BITS 16
/*
 * filter_ports: a bitmap, bit (kind << SS_PORT_KEY_KIND_SHIFT) | port, kind as in enum ss_addr_kind, in
 * 64-bit words (an array: its lookups are inlined, a hash's cost a call and a hash on every event)
 */
#define SS_PORT_KEY_KIND_SHIFT 16
#define SS_PORT_BITMAP_WORDS (5 << 10) /* (SS_ADDR_EXCLUDE + 1) << (SS_PORT_KEY_KIND_SHIFT - 6) */
struct filter_key {
	__u32 prefixlen;
	__u8 kind;
	__u8 family;
	__u8 addr[16];
};

/* owner of a socket */
struct owner {
	__u32 pid;
	__u32 uid;
	char comm[SS_COMM_LEN];
};

/*
 * What the kernel keeps with each socket, in socket-local storage
 * (BPF_MAP_TYPE_SK_STORAGE, 5.11+ for tracing programs; cloned from a
 * listener into the sockets it accepts) or, before 5.11, in a hash keyed
 * by the socket's address.
 */
struct sock_state {
	struct owner owner;
	__u64 start_ns;	    /* this connection's first state change (SYN_SENT: when the SYN left) */
	__u64 handshake_ns; /* set at ESTABLISHED */
	__u64 states;	    /* new states, 4 bits each */
	__u8 nstates;
	__u8 flags;	    /* SS_R_* and SS_S_* */
	__u8 direction;	    /* enum ss_direction */
	__u8 how;	    /* enum ss_owner: how .owner is known */
	__u16 seen;	    /* bit n: it was in state n */
	__u16 err;	    /* the last error reported on the socket (sk_err, else sk_err_soft), before user space takes it */
	__u32 drops;	    /* as struct conn_record.drops (a listener's: the packets dropped for it) */
	struct drop_slot drop_slots[SS_DROP_SLOTS];
};

/* a listening socket, by namespace, family, local address and port */
struct listen_key {
	__u32 netns;
	__u16 port;
	__u8 family;
	__u8 pad;
	__u8 addr[16];
};

/*
 * In-kernel metrics (--metrics with no line output, kernel/abi.py METRIC_*): one per-CPU array element
 * (metric_counts, in metrics.h) of SS_M_SLOTS counters that user space sums over CPUs at scrape time.
 * Events by type and new state at SS_M_EVENTS + type * 16 + newstate; connections by direction and
 * result at SS_M_CONNS + direction * 8 + result; then SS_M_HISTOGRAMS histograms (duration in ns,
 * handshake in ns, RTT in us) of SS_M_HISTOGRAM_SLOTS slots each: a count per bucket (bucket i: the
 * value is at most bound i, bounds from user space; the bucket past the last bound: +Inf), the sum last.
 */
/* what the kernel counts instead of sending (kernel_metrics): the events, the connection records, or both */
#define SS_KM_EVENTS 1
#define SS_KM_RECORDS 2
#define SS_M_EVENTS 0
#define SS_M_CONNS 128
#define SS_M_HISTOGRAMS 3
#define SS_M_BOUNDS 14
#define SS_M_HISTOGRAM_SLOTS 16 /* SS_M_BOUNDS + 1 buckets, the sum */
#define SS_M_DURATION 160
#define SS_M_HANDSHAKE 176
#define SS_M_RTT 192
#define SS_M_SLOTS 208

/*
 * listen_drops: a listener's packets dropped because its accept queue was
 * full (TCP_LISTEN_OVERFLOW), by struct listen_key; user space reads it
 * each second (the accept-queue-overflow warning)
 */
struct listen_drops {
	__u64 drops;
	__u32 backlog;	/* the listener's accept queue size (sk_max_ack_backlog) at the last drop */
	__u32 pad;
	struct owner owner; /* the listener's, pid 0 if unknown */
};

#endif /* SOCKETSNOOP_H */
