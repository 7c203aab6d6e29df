/* SYN-flood rate limiter: per IPv4 source, at most `syn_limit` TCP SYNs (SYN without ACK) per
 * `window_ns` are passed; further SYNs in the same window are dropped. State lives in an LRU
 * hash, so a flood from many sources evicts the quietest ones instead of failing. The limits
 * are read-only globals (.rodata) a loader may patch. Non-SYN traffic passes. */
#include "common.h"

const volatile __u32 syn_limit = 5;
const volatile __u64 window_ns = 1000000000ULL;

struct window {
	__u64 start_ns;
	__u64 syns;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct window);
} syn_windows SEC(".maps");

/* Packets dropped, for the controller (.bss). */
__u64 dropped_syns = 0;

SEC("xdp")
int limit_syns(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = ipv4_header(data, data_end);

	if (!ip || ip->protocol != IPPROTO_TCP)
		return XDP_PASS;
	struct tcphdr *tcp = (void *)ip + ip->ihl * 4;
	if ((void *)(tcp + 1) > data_end)
		return XDP_PASS;
	if (!tcp->syn || tcp->ack)
		return XDP_PASS;

	__u32 saddr = ip->saddr;
	__u64 now = bpf_ktime_get_ns();
	struct window *w = bpf_map_lookup_elem(&syn_windows, &saddr);
	if (w && now - w->start_ns < window_ns) {
		if (__sync_fetch_and_add(&w->syns, 1) < syn_limit)
			return XDP_PASS;
		__sync_fetch_and_add(&dropped_syns, 1);
		return XDP_DROP;
	}
	/* First SYN of a new window. */
	struct window fresh = { .start_ns = now, .syns = 1 };
	bpf_map_update_elem(&syn_windows, &saddr, &fresh, BPF_ANY);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
