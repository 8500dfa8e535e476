/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Counting without transfer (--metrics with no line output): the metrics
 * endpoint's counters and histograms kept here, per CPU, and read by user
 * space at scrape time (output/kernel_metrics.py). An event (SS_KM_EVENTS in
 * kernel_metrics) or a connection record (SS_KM_RECORDS) that passed the
 * filters is counted in metric_counts instead of written to a ring: it does
 * not cross to user space. The records still cross when the exit report
 * wants them. Layout: SS_M_* in socketsnoop.h.
 */
#ifndef SOCKETSNOOP_METRICS_H
#define SOCKETSNOOP_METRICS_H

#include "socketsnoop.h"
#include "config.h"
#include "filters.h"

const volatile __u32 kernel_metrics = 0; /* SS_KM_* */
/* each histogram's bucket bounds (output/metrics.py's, in the unit counted), the unused ones ~0 */
const volatile __u64 metric_bounds[SS_M_HISTOGRAMS][SS_M_BOUNDS] = {};

struct metric_counts {
	__u64 n[SS_M_SLOTS];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct metric_counts);
} metric_counts SEC(".maps");

static __always_inline struct metric_counts *metrics_here(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&metric_counts, &zero);
}

/* atomic although per CPU: another of our programs can interrupt this one on the same CPU (as count()) */
static __always_inline void metric_add(struct metric_counts *m, __u32 i, __u64 v)
{
	/* the compiler makes the index with an OR, whose bounds 5.10's verifier loses: the check gives them
	 * back, and the empty asm keeps the compiler from dropping it as always true */
	asm volatile("" : "+r"(i));
	if (i < SS_M_SLOTS)
		__sync_fetch_and_add(&m->n[i], v);
}

static __always_inline void metric_event_of(__u8 type, __u8 newstate)
{
	struct metric_counts *m = metrics_here();

	if (m)
		metric_add(m, SS_M_EVENTS + (type & 7) * 16 + (newstate & 15), 1);
}

static __always_inline void metric_event(const struct event *e)
{
	metric_event_of(e->type, e->newstate);
}

static __always_inline void observe(struct metric_counts *m, int h, __u32 base, __u64 v)
{
	__u32 i;

	for (i = 0; i < SS_M_BOUNDS; i++)
		if (v <= metric_bounds[h][i])
			break;
	metric_add(m, base + i, 1);
	metric_add(m, base + SS_M_BOUNDS + 1, v);
}

/* a connection, as output/metrics.py counts a record: whole (its start seen), it has a duration */
static __always_inline void metric_conn(__u8 direction, __u8 result, bool whole, __u64 duration_ns,
					__u64 handshake_ns, __u32 rtt_us)
{
	struct metric_counts *m = metrics_here();

	if (!m)
		return;
	metric_add(m, SS_M_CONNS + (direction & 3) * 8 + (result & 7), 1);
	if (whole)
		observe(m, 0, SS_M_DURATION, duration_ns);
	if (handshake_ns)
		observe(m, 1, SS_M_HANDSHAKE, handshake_ns);
	if (rtt_us)
		observe(m, 2, SS_M_RTT, rtt_us);
}

/* a connection record: the histograms take what the record knows */
static __always_inline void metric_record(const struct conn_record *r)
{
	bool whole = r->start_ns && !(r->flags & SS_R_INCOMPLETE);

	metric_conn(r->direction, r->result, whole, whole ? r->ts_ns - r->start_ns : 0, r->handshake_ns, r->rtt_us);
}

/*
 * Counting alone: the events and the records counted here (user space asks it only without a filter by
 * the owner: commands/run/parts.py, counts_in_kernel()). Nothing then reads an event's owner or
 * namespace, nor a record's bytes: state_change() takes the short way (count_state_change()), which reads
 * only what the counts, the histograms and the filters need.
 */
static __always_inline bool counting_alone(void)
{
	return (kernel_metrics & (SS_KM_EVENTS | SS_KM_RECORDS)) == (SS_KM_EVENTS | SS_KM_RECORDS) &&
	       !(filter_flags & SS_FILT_OWNER) && !summary_only && !no_records && !use_perf;
}

#endif /* SOCKETSNOOP_METRICS_H */
