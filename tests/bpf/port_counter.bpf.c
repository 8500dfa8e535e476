// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * tests/test_kernel_scale.py's reference: the inet_sock_set_state hits that a
 * BPF program gets to see, for TCP sockets with a given port at either end,
 * counted and nothing else. Against the trace event's own count (tracefs) it
 * tells the hits the kernel ran no BPF program for at all (no program could
 * see or count them) from the hits socket-snoop saw; against socket-snoop, it
 * tells whether socket-snoop took every hit a BPF program could take.
 * Ports as the tracepoint reports them: inet_sport and skc_dport.
 * Built by `make bpf` (the object is committed, as socket-snoop's is).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#define MAX_PORTS 8

const volatile __u16 ports[MAX_PORTS] = {};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(count_ports, const struct sock *sk, const int oldstate, const int newstate)
{
	const struct inet_sock *inet = (const struct inet_sock *)sk;
	__u16 dport, sport;
	__u32 zero = 0;
	__u64 *v;

	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	dport = bpf_ntohs(sk->__sk_common.skc_dport);
	sport = bpf_ntohs(BPF_CORE_READ(inet, inet_sport));
	for (int i = 0; i < MAX_PORTS; i++) {
		if (ports[i] && (ports[i] == sport || ports[i] == dport)) {
			v = bpf_map_lookup_elem(&hits, &zero);
			if (v)
				*v += 1; /* per CPU; a program is never run twice at once on a CPU */
			return 0;
		}
	}
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
