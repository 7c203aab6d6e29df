// expect: reject "map_value_or_null"
// Uses a lookup result without checking it.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 16);
} seen SEC(".maps");

SEC("xdp")
int unchecked(struct xdp_md *ctx)
{
	__u32 key = ctx->rx_queue_index;
	__u64 *v = bpf_map_lookup_elem(&seen, &key);
	*v += 1;
	return XDP_PASS;
}
char LICENSE[] SEC("license") = "GPL";
