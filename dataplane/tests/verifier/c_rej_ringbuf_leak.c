// expect: reject "unreleased reference"
// Forgets to submit the reservation on one path.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

SEC("xdp")
int leak(struct xdp_md *ctx)
{
	__u32 *rec = bpf_ringbuf_reserve(&events, 4, 0);
	if (!rec)
		return XDP_PASS;
	*rec = ctx->ingress_ifindex;
	if (ctx->rx_queue_index == 0)
		return XDP_DROP;
	bpf_ringbuf_submit(rec, 0);
	return XDP_PASS;
}
char LICENSE[] SEC("license") = "GPL";
