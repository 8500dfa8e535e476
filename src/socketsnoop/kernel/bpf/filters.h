/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The filters, in the kernel: the maps user space fills once (values of each
 * filter kind), the cgroup filters' verdict, and passes_filters(), which
 * decides for each event and connection record. User space applies the same
 * rules where the kernel cannot (SS_F_OWNER_UNVERIFIED: the owner is a guess).
 */
#ifndef SOCKETSNOOP_FILTERS_H
#define SOCKETSNOOP_FILTERS_H

#include "config.h"
#include "sock.h"

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

/* a bitmap of ports by kind: see SS_PORT_KEY_KIND_SHIFT */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SS_PORT_BITMAP_WORDS);
	__type(key, __u32);
	__type(value, __u64);
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
/* sk: a BTF pointer (cgroup_of()); by_any: an address read from memory (cgroup_of_any()) */
static __always_inline void fill_cgroup_as(struct event *e, const struct sock *sk, bool by_any)
{
	if (want_cgroup)
		e->cgroup = by_any ? cgroup_of_any(sk) : cgroup_of(sk);
	if ((filter_flags & (SS_FILT_CGROUP | SS_FILT_X_CGROUP)) && cgroup_passes(sock_cgroup(sk), filter_flags))
		e->flags |= SS_F_CGROUP_IN;
}

static __always_inline void fill_cgroup(struct event *e, const struct sock *sk)
{
	fill_cgroup_as(e, sk, false);
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
	__u32 bit = (kind << SS_PORT_KEY_KIND_SHIFT) | port;
	__u32 word = bit >> 6;
	__u64 *w = bpf_map_lookup_elem(&filter_ports, &word);

	return w && (*w >> (bit & 63)) & 1;
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

#endif /* SOCKETSNOOP_FILTERS_H */
