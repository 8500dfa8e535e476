/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Packets the kernel dropped (kfree_skb, with its reason: Linux 5.17+):
 * which are TCP's and worth counting, the socket each belongs to, and the
 * counts kept per reason, per socket and per overflowing listener. Nothing
 * here sends anything to user space (on_kfree_skb does, for --drops).
 */
#ifndef SOCKETSNOOP_DROPS_H
#define SOCKETSNOOP_DROPS_H

#include "defs.h"
#include "config.h"
#include "cpu.h"
#include "sock.h"
#include "owner.h"

/* per reason value (the last slot: every value past it), per CPU: socketsnoop_drops_total{reason} */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SS_DROP_REASONS);
	__type(key, __u32);
	__type(value, __u64);
} drop_reasons SEC(".maps");

/* listeners whose accept queue overflowed (struct listen_drops), deleted when the listener closes */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, SS_MAX_LISTENERS);
	__type(key, struct listen_key);
	__type(value, struct listen_drops);
} listen_drops SEC(".maps");

/*
 * A drop worth counting: not a normal free (consumed; on newer kernels
 * kfree_skb no longer fires for those, older ones have no such value) nor
 * one whose reason nobody gave. Values from the running kernel (CO-RE).
 */
static __always_inline bool real_drop(__u32 reason)
{
	if (reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NOT_SPECIFIED))
		return false;
	if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_CONSUMED) &&
	    reason == bpf_core_enum_value(enum skb_drop_reason, SKB_CONSUMED))
		return false;
	if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_NOT_DROPPED_YET) &&
	    reason == bpf_core_enum_value(enum skb_drop_reason, SKB_NOT_DROPPED_YET))
		return false;
	return true;
}

/* the packet is IPv4 or IPv6 carrying TCP (no IPv6 extension headers: those are not followed) */
static __always_inline bool tcp_packet(const struct sk_buff *skb)
{
	__u16 proto = bpf_ntohs(skb->protocol);
	__u16 nh = skb->network_header;
	unsigned char *head = skb->head;
	__u8 l4 = 0;

	if (nh == (__u16)~0U) /* not set: the packet never got to the network layer */
		return false;
	if (proto == ETH_P_IP)
		bpf_probe_read_kernel(&l4, 1, head + nh + offsetof(struct iphdr, protocol));
	else if (proto == ETH_P_IPV6)
		bpf_probe_read_kernel(&l4, 1, head + nh + offsetof(struct ipv6hdr, nexthdr));
	return l4 == IPPROTO_TCP;
}

/*
 * The TCP socket a drop belongs to, as a full socket or a listener: the
 * socket the packet was received for (rx_sk, where the tracepoint has it:
 * for a handshake's packet, the listener), else the packet's own. NULL for
 * a timewait or request socket (nobody owns the one; the other's listener
 * is only a plain address here, which the socket storage helper refuses),
 * none, or another protocol's.
 */
static __always_inline const struct sock *drop_socket(const struct sock *rx_sk, const struct sk_buff *skb)
{
	const struct sock *sk = rx_sk ? rx_sk : skb->sk;
	int state;

	if (!sk)
		return NULL;
	state = sk->__sk_common.skc_state;
	if (state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV || sk->sk_protocol != IPPROTO_TCP)
		return NULL;
	return sk;
}

static __always_inline void count_reason(__u32 reason)
{
	__u32 idx = reason < SS_DROP_REASONS ? reason : SS_DROP_REASONS - 1;
	__u64 *v = bpf_map_lookup_elem(&drop_reasons, &idx);

	if (v)
		__sync_fetch_and_add(v, 1); /* nested programs may count on this CPU too (cpu.h: count) */
}

/* a socket's drops: the total, and the count of the reason in its slot (the first SS_DROP_SLOTS reasons seen) */
static __always_inline void note_drop(struct sock_state *st, __u16 reason)
{
	__sync_fetch_and_add(&st->drops, 1);
	for (int i = 0; i < SS_DROP_SLOTS; i++) {
		struct drop_slot *s = &st->drop_slots[i];

		if (s->count && s->reason != reason)
			continue;
		s->reason = reason;
		if (s->count < 0xffff)
			s->count++;
		return;
	}
}

/* a listener's accept queue overflowed: counted for user space's accept-queue-overflow warning */
static __always_inline void listen_overflow(const struct sock *sk, const struct sock_state *st)
{
	struct listen_drops *d, fresh = {};
	struct listen_key k;

	listen_key_of(&k, sk);
	d = bpf_map_lookup_elem(&listen_drops, &k);
	if (!d) {
		struct owner *o = st && (st->flags & SS_S_OWNED) ? (struct owner *)&st->owner : listener_owner(sk);

		if (o)
			fresh.owner = *o;
		bpf_map_update_elem(&listen_drops, &k, &fresh, BPF_NOEXIST);
		d = bpf_map_lookup_elem(&listen_drops, &k);
		if (!d)
			return; /* SS_MAX_LISTENERS overflowing at once: still counted by reason */
	}
	__sync_fetch_and_add(&d->drops, 1);
	d->backlog = BPF_CORE_READ(sk, sk_max_ack_backlog);
}

#endif /* SOCKETSNOOP_DROPS_H */
