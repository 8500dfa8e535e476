// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* bench/churn round D: count inet_sock_set_state hits for TCP in a per-CPU counter, nothing else. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(count_state, const struct sock *sk, int oldstate, int newstate)
{
	__u32 key = 0;
	__u64 *v;

	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	v = bpf_map_lookup_elem(&counts, &key);
	if (v)
		*v += 1;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
