/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Per-CPU state: how deep our programs are nested on this CPU and the hit
 * on_state_change took at each context level (RE-ENTRY in socketsnoop.bpf.c),
 * and the counters user space reads (enum ss_counter).
 */
#ifndef SOCKETSNOOP_CPU_H
#define SOCKETSNOOP_CPU_H

#include "socketsnoop.h"

/*
 * a hit of inet_sock_set_state, as on_state_change_missed recognizes it: the socket, the states, and where
 * the kernel put the hit's arguments (ctx), which is the same address for both programs of one hit (the
 * tracepoint calls them in turn from one frame) and another for a hit that interrupts them
 */
struct hit {
	__u64 sk;
	__u64 ctx;
	__u32 states; /* oldstate << 8 | newstate */
	__u32 pad;
};

/* per CPU: how many of our programs are running there; per context level, the hit on_state_change took last */
struct cpu_state {
	__u32 depth;
	__u32 pad;
	__u64 unannounced; /* bytes this CPU wrote to `events` since its last wake-up of the reader (rings.h) */
	struct hit taken[SS_CONTEXT_LEVELS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cpu_state);
} cpu_states SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SS_C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

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

#endif /* SOCKETSNOOP_CPU_H */
