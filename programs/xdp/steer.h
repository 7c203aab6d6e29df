/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * Map layouts shared by steer.bpf.c and dataplane/src/steer (mirrored there as byte
 * arrays; keep the two in step). Every field is fixed-size and explicitly padded so
 * both sides agree on sizes without relying on compiler layout rules.
 */
#ifndef SLUICE_STEER_H
#define SLUICE_STEER_H

#include <linux/types.h>

/* Entries of the XSKMAP `xsks`, indexed by rx queue. */
#define STEER_MAX_QUEUES 64
#define STEER_MAX_PASS_RULES 256
#define STEER_MAX_LOCAL_ADDRS 256

/*
 * `passthrough` key: a packet whose IP protocol is `proto` and whose TCP/UDP
 * destination port is `port` goes to the kernel. `port` is in network byte order
 * (compared with the packet bytes as they are); port 0 matches every packet of
 * `proto` (e.g. proto 1 = all ICMP). The u8 value is always 1: presence is the rule.
 */
struct steer_pass_key {
	__u8 proto;
	__u8 pad;
	__be16 port;
};

/*
 * `local_addrs` key: destination address of management traffic to the box itself.
 * IPv4 addresses use the first 4 bytes of `addr`, the rest zero. `family` is the IP
 * version (4 or 6). The u8 value is always 1.
 */
struct steer_addr_key {
	__u8 addr[16];
	__u8 family;
	__u8 pad[3];
};

/*
 * `counters`: a one-entry PERCPU_ARRAY. seen = every frame the program ran on;
 * redirected + passed + dropped = seen.
 */
struct steer_counters {
	__u64 seen;
	__u64 redirected;
	__u64 passed;
	__u64 dropped;
};

#endif
