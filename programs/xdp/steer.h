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

/*
 * Firewall stage (filled by dataplane/src/firewall through dataplane/src/steer/firewall.rs).
 * Runs only on frames the steering would hand to the AF_XDP socket: the kernel-side prefix
 * of the firewall's rules, in order, first terminal match wins.
 */
#define FW_MAX_RULES 256
/* Per-rule counters: a group slot counts each of its rules in its own counter. The map is
 * per-CPU and exists in every steering program, so its size is paid per CPU per interface
 * even without a firewall: 8192 slots are 128 KiB a CPU. Larger rule groups run in userspace,
 * where a group is the same one lookup. */
#define FW_MAX_COUNTERS (1 << 13)
/* Port sets live in `fw_ports` as 65536-bit bitmaps of FW_PORT_WORDS u64 words each. */
#define FW_MAX_PORT_SETS 64
#define FW_PORT_WORDS 1024
/* LPM entries (both tries are allocated on insert, so a high cap costs nothing). */
#define FW_MAX_ADDRS (1 << 21)
/* A set field holding FW_ANY matches every packet. */
#define FW_ANY 0xffffffffu

/* fw_rule.flags: which optional single-value fields take part. */
#define FW_F_PROTO 0x01
#define FW_F_ICMP_TYPE 0x02
#define FW_F_ICMP_CODE 0x04
#define FW_F_VLAN 0x08
#define FW_F_V4 0x10 /* IPv4 packets only */
#define FW_F_V6 0x20 /* IPv6 packets only */
/* A group slot: src_set (or dst_set) names a set whose LPM value is the matching rule's
 * counter and action (FW_GROUP_*), the first rule of the group holding the address. */
#define FW_F_GROUP_SRC 0x40
#define FW_F_GROUP_DST 0x80
#define FW_GROUP_COUNTER_MASK 0x00ffffffu
#define FW_GROUP_ACTION_SHIFT 24

/* fw_rule.action and fw_state.fallback. */
#define FW_ACT_ACCEPT 0 /* to the AF_XDP socket, rule evaluation ends */
#define FW_ACT_DROP 1   /* XDP_DROP (drop and reject-silently) */
#define FW_ACT_COUNT 2  /* count, evaluation goes on */

/* `fw_state`: one-entry ARRAY. nrules = 0 switches the stage off. */
struct fw_state {
	__u32 nrules;
	/* What a frame no kernel rule ended becomes: FW_ACT_ACCEPT (userspace decides) or
	 * FW_ACT_DROP (every rule is in the kernel and the default policy drops). */
	__u32 fallback;
};

/* `fw_rules`: ARRAY of FW_MAX_RULES. */
struct fw_rule {
	__u32 src_set;   /* address set id (fw_v4 / fw_v6 key), or FW_ANY */
	__u32 dst_set;
	__u32 sport_set; /* port set slot in fw_ports, or FW_ANY */
	__u32 dport_set;
	__u16 len_min;   /* frame length bounds, inclusive */
	__u16 len_max;
	__u16 vlan;      /* outer VLAN id, with FW_F_VLAN */
	__u8 proto;      /* IP protocol, with FW_F_PROTO */
	__u8 flags;
	__u8 tcp_mask;   /* (tcp flags & tcp_mask) == tcp_value; mask 0 = any */
	__u8 tcp_value;
	__u8 icmp_type;
	__u8 icmp_code;
	__u8 action;
	__u8 pad[3];
	__u32 counter;   /* slot in fw_counters (unused by group slots: the LPM value has it) */
};

/* `fw_v4` / `fw_v6` LPM keys: prefixlen counts the 32 set bits too. The __u32 value is
 * unused by plain sets and holds counter | action << FW_GROUP_ACTION_SHIFT for group sets. */
struct fw_v4_key {
	__u32 prefixlen;
	__u32 set;
	__u8 addr[4];
};

struct fw_v6_key {
	__u32 prefixlen;
	__u32 set;
	__u8 addr[16];
};

/* `fw_counters`: PERCPU_ARRAY of FW_MAX_COUNTERS + 1; the last slot counts the fallback drop. */
struct fw_counter {
	__u64 packets;
	__u64 bytes;
};

#endif
