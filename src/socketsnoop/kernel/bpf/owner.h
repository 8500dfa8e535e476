/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Who owns a socket: the state kept with each socket (struct sock_state, in
 * socket storage or a hash), what user space found in /proc for sockets
 * older than us (owners), the listeners whose owner a passively opened
 * socket takes (listeners), and the rules that decide an event's pid, uid
 * and comm (enum ss_owner).
 */
#ifndef SOCKETSNOOP_OWNER_H
#define SOCKETSNOOP_OWNER_H

#include "defs.h"
#include "config.h"
#include "cpu.h"
#include "sock.h"

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

#endif /* SOCKETSNOOP_OWNER_H */
