/* Port blocklist: drops IPv4 TCP and UDP packets whose destination port (xdp program
 * `block_dst_port`) or source port (section "sluice", program `block_src_port`) is a key of
 * the hash map `blocked_ports` (host byte order). The map's value counts the drops. Everything
 * else passes. Two programs in one object share the map. */
#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u16);
	__type(value, __u64);
} blocked_ports SEC(".maps");

/* The (source, destination) ports of an IPv4 TCP/UDP packet; 0 if it is not one. */
static __always_inline int ports(struct xdp_md *ctx, __u16 *src, __u16 *dst)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *ip = ipv4_header(data, data_end);

	if (!ip || (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP))
		return 0;
	/* Both TCP and UDP start with the source and destination ports. */
	struct udphdr *l4 = (void *)ip + ip->ihl * 4;
	if ((void *)(l4 + 1) > data_end)
		return 0;
	*src = bpf_ntohs(l4->source);
	*dst = bpf_ntohs(l4->dest);
	return 1;
}

static __always_inline int verdict(__u16 port)
{
	__u64 *drops = bpf_map_lookup_elem(&blocked_ports, &port);

	if (!drops)
		return XDP_PASS;
	__sync_fetch_and_add(drops, 1);
	return XDP_DROP;
}

SEC("xdp")
int block_dst_port(struct xdp_md *ctx)
{
	__u16 src, dst;

	if (!ports(ctx, &src, &dst))
		return XDP_PASS;
	return verdict(dst);
}

SEC("sluice")
int block_src_port(struct xdp_md *ctx)
{
	__u16 src, dst;

	if (!ports(ctx, &src, &dst))
		return XDP_PASS;
	return verdict(src);
}

char LICENSE[] SEC("license") = "GPL";
