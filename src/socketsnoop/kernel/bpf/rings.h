/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Sending to user space: the rings (events, records, and their spares:
 * RE-ENTRY, 2 in socketsnoop.bpf.c), the perf buffer that replaces them on
 * request (--buffer perf), and when to wake the reader (wakeup_bytes).
 */
#ifndef SOCKETSNOOP_RINGS_H
#define SOCKETSNOOP_RINGS_H

#include "config.h"
#include "cpu.h"
#include "sock.h"
#include "filters.h"
#include "metrics.h"

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
 * 1 while the reader is awake (between two of its sleeps), 0 while it sleeps or has not said: user space
 * writes it through a mapping of this map (kernel/ringbuf.py: RingBuffer.wait)
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
	__uint(map_flags, BPF_F_MMAPABLE);
} reader_awake SEC(".maps");

static __always_inline bool reader_is_awake(void)
{
	__u32 zero = 0;
	__u32 *v = bpf_map_lookup_elem(&reader_awake, &zero);

	return v && *v;
}

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} perf_events SEC(".maps");

/*
 * Write an event for user space: to `events`, or `events_spare` when we run
 * inside another of our programs (RE-ENTRY, 2), the other ring as a rescue;
 * or to the perf buffer. 0, or the error of the last write tried.
 */
static __always_inline long submit_event(void *ctx, struct event *e, struct cpu_state *cs)
{
	long err;

	if (use_perf) {
		/* each CPU's perf buffer takes nested writes */
		err = bpf_perf_event_output(ctx, &perf_events, BPF_F_CURRENT_CPU, e, sizeof(*e));
	} else if (cs && cs->depth > 1) {
		err = bpf_ringbuf_output(&events_spare, e, sizeof(*e), BPF_RB_NO_WAKEUP);
		if (err) /* the other ring as a rescue */
			err = bpf_ringbuf_output(&events, e, sizeof(*e), 0);
	} else {
		__u64 flags = 0;

		if (wakeup_bytes && cs) {
			/*
			 * Wake the reader once this CPU has written a mark's worth
			 * since it last did: a wake-up is costly, and a reader that
			 * is awake reads everything anyway. Below the mark the
			 * reader finds the data on its own within its poll interval.
			 * Counted per CPU, not read from the ring
			 * (bpf_ringbuf_query): the ring's positions are cache lines
			 * the reader and every CPU write, and reading them cost a
			 * tenth of the program. Each CPU wakes the reader at least
			 * every mark's worth, so it never sleeps out its poll
			 * interval with more than a mark per CPU unread.
			 *
			 *
			 * Nor while the reader is awake (reader_awake): the
			 * wake-up is an interrupt this CPU sends itself
			 * (irq_work), which costs a virtual machine an exit, and
			 * an awake reader reads on until it has caught up. The
			 * count starts again all the same, so a reader that then
			 * sleeps is woken by the next CPU to reach its mark, as
			 * it would have been: the rows gather meanwhile.
			 */
			cs->unannounced += sizeof(*e) + 8; /* + the record header */
			flags = BPF_RB_NO_WAKEUP;
			if (cs->unannounced >= wakeup_bytes) {
				cs->unannounced = 0;
				if (!reader_is_awake())
					flags = BPF_RB_FORCE_WAKEUP;
			}
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
	return err;
}

/* cs: this CPU's state, from enter(): are we running inside another of our programs? */
static __always_inline int emit(void *ctx, struct event *e, struct cpu_state *cs)
{
	normalize_family(e);
	if (summary_only || !passes_filters(e)) { /* --summary-only: connection records, no events */
		count(SS_C_FILTERED);
		return 0;
	}
	if (kernel_metrics & SS_KM_EVENTS) { /* counted here, not sent (metrics.h): captured all the same */
		metric_event(e);
		count(SS_C_SENT);
		return 0;
	}
	if (submit_event(ctx, e, cs)) {
		/*
		 * The overload policy: a full `events` ring sheds this line, counted by kind. It never
		 * costs a connection record: those have rings of their own, sized to fill last.
		 */
		count(SS_C_LOST);
		count(e->type == SS_EV_DROP ? SS_C_SHED_DROP : SS_C_SHED_STATE + e->type - SS_EV_STATE);
	} else {
		count(SS_C_SENT);
	}
	return 0;
}

/*
 * Write a connection record for user space, as submit_event() does. No
 * wake-up: the reader waits on `events` (woken at its fill mark) and reads
 * the records each time it wakes, or every 0.1 s; a wake-up per record would
 * cost the kernel work each time the reader has caught up.
 */
static __always_inline long submit_record(struct conn_record *r, struct cpu_state *cs)
{
	long err;

	if (cs && cs->depth > 1) {
		err = bpf_ringbuf_output(&records_spare, r, sizeof(*r), BPF_RB_NO_WAKEUP);
		if (err)
			err = bpf_ringbuf_output(&records, r, sizeof(*r), BPF_RB_NO_WAKEUP);
	} else {
		err = bpf_ringbuf_output(&records, r, sizeof(*r), BPF_RB_NO_WAKEUP);
		if (err) /* RE-ENTRY, 2 */
			err = bpf_ringbuf_output(&records_spare, r, sizeof(*r), BPF_RB_NO_WAKEUP);
	}
	return err;
}

#endif /* SOCKETSNOOP_RINGS_H */
