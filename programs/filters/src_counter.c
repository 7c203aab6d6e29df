/* Per-source packet counter: counts packets and bytes per IPv4 source address in the hash
 * map `by_source` (key: address in network order), and all IPv4 packets in the per-CPU
 * array `totals` (index 0: packets, 1: bytes). Passes every packet. */
#include "common.h"

struct counts {
	__u64 packets;
	__u64 bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct counts);
} by_source SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} totals SEC(".maps");

static __always_inline void bump_total(__u32 index, __u64 by)
{
	__u64 *v = bpf_map_lookup_elem(&totals, &index);

	/* Per-CPU values are only ever touched by their own worker: no atomic needed. */
	if (v)
		*v += by;
}

SEC("xdp")
int count_sources(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = ipv4_header(data, data_end);
	__u64 len = data_end - data;

	if (!ip)
		return XDP_PASS;
	__u32 saddr = ip->saddr;
	struct counts *c = bpf_map_lookup_elem(&by_source, &saddr);
	if (!c) {
		struct counts fresh = {};
		/* Another worker may insert the same source first: then count into its entry. */
		bpf_map_update_elem(&by_source, &saddr, &fresh, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&by_source, &saddr);
		if (!c)
			return XDP_PASS;
	}
	__sync_fetch_and_add(&c->packets, 1);
	__sync_fetch_and_add(&c->bytes, len);
	bump_total(0, 1);
	bump_total(1, len);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
