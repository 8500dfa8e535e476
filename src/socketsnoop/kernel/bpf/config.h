/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The program's configuration: read-only variables that user space sets
 * before load (kernel/loader.py: Probe._open, names and formats in
 * kernel/abi.py: RODATA). The verifier sees their values, so a switch that is
 * off removes its code.
 */
#ifndef SOCKETSNOOP_CONFIG_H
#define SOCKETSNOOP_CONFIG_H

const volatile __u32 filter_flags = 0;
const volatile __u32 filter_states = 0;	 /* bit n: new state n passes */
const volatile __u64 wakeup_bytes = 0;	 /* 0: wake user space on every event */
const volatile bool use_perf = false;	 /* perf event array instead of ring buffer */
const volatile bool use_hash_storage = false; /* sock_states_hash instead of socket storage (before 5.11) */
const volatile bool summary_only = false;	 /* no per-event records: connection records only (--summary-only) */
const volatile bool no_records = false;	 /* no connection records (--no-summary) */
const volatile __u32 cgroup_levels = 0;	 /* bit n: a cgroup filter names a cgroup at depth n (filter_cgroups) */
const volatile bool want_cgroup = true;	 /* struct event.cgroup wanted (JSON, --context): else left 0 */
const volatile bool drop_events = false;	 /* each TCP drop as an event (--drops): else only counted */
const volatile bool drop_rx_sk = false;	 /* kfree_skb passes rx_sk, its fourth argument (its BTF says) */

#endif /* SOCKETSNOOP_CONFIG_H */
