/* IPv6 extension-header policy: walks the chain of IPv6 extension headers (hop-by-hop,
 * routing, fragment, destination options) in a real loop of at most MAX_EXT headers — kept a
 * loop (not unrolled), so it loads only because the verifier proves the bound — and
 *  - drops packets with a type 0 routing header (deprecated by RFC 5095 as an amplifier),
 *  - drops chains of more than MAX_EXT extension headers, and headers cut short,
 *  - counts each passing IPv6 packet under its number of extension headers in the array
 *    `chain_lengths` (index 0..MAX_EXT), and the drops in the globals `dropped_rh0` and
 *    `dropped_chain` (.bss).
 * Anything that is not IPv6 passes untouched. */
#include "common.h"

#define MAX_EXT 8

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_EXT + 1);
	__type(key, __u32);
	__type(value, __u64);
} chain_lengths SEC(".maps");

__u64 dropped_rh0 = 0;
__u64 dropped_chain = 0;

/* Every extension header starts with the next header and its length in 8-byte units (not
 * counting the first 8); a routing header then has its type. All are at least 8 bytes. */
struct ext_hdr {
	__u8 nexthdr;
	__u8 len;
	__u8 routing_type;
	__u8 rest[5];
};

static __always_inline int is_ext(__u8 next)
{
	return next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_FRAGMENT ||
	       next == IPPROTO_DSTOPTS;
}

SEC("xdp")
int ipv6_ext_policy(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = (void *)(eth + 1);

	if ((void *)(ip6 + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IPV6))
		return XDP_PASS;
	__u8 next = ip6->nexthdr;
	__u32 offset = sizeof(*eth) + sizeof(*ip6);
	__u32 n;

#pragma clang loop unroll(disable)
	for (n = 0; n < MAX_EXT; n++) {
		if (!is_ext(next))
			break;
		struct ext_hdr *h = data + offset;
		if ((void *)(h + 1) > data_end) {
			__sync_fetch_and_add(&dropped_chain, 1);
			return XDP_DROP;
		}
		if (next == IPPROTO_ROUTING && h->routing_type == 0) {
			__sync_fetch_and_add(&dropped_rh0, 1);
			return XDP_DROP;
		}
		/* A fragment header is 8 bytes whatever its second byte (reserved) says. */
		offset += next == IPPROTO_FRAGMENT ? 8 : (h->len + 1) * 8;
		next = h->nexthdr;
	}
	if (is_ext(next)) {
		__sync_fetch_and_add(&dropped_chain, 1);
		return XDP_DROP;
	}
	__u64 *count = bpf_map_lookup_elem(&chain_lengths, &n);
	if (count)
		__sync_fetch_and_add(count, 1);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
