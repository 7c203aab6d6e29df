/* Packet sampler: every `sample_every`-th packet (counted across workers in .bss) is copied
 * — its length, ingress interface and first 64 bytes — into the ring buffer `samples` for
 * the controller, and logged with bpf_printk. Packets shorter than an Ethernet header are
 * reserved and then discarded, never published. Passes every packet. */
#include "common.h"

#define SNAP 64

const volatile __u32 sample_every = 4;

struct sample {
	__u32 len;
	__u32 ifindex;
	__u8 head[SNAP];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096 * 4);
} samples SEC(".maps");

__u64 seen = 0;

SEC("xdp")
int sample_packets(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 n = __sync_fetch_and_add(&seen, 1);

	if (n % sample_every != 0)
		return XDP_PASS;
	struct sample *s = bpf_ringbuf_reserve(&samples, sizeof(*s), 0);
	if (!s)
		return XDP_PASS;
	s->len = data_end - data;
	s->ifindex = ctx->ingress_ifindex;
	if (s->len < sizeof(struct ethhdr)) {
		bpf_ringbuf_discard(s, 0);
		return XDP_PASS;
	}
#pragma unroll
	for (int i = 0; i < SNAP; i++) {
		__u8 *b = data + i;
		if ((void *)(b + 1) > data_end)
			s->head[i] = 0;
		else
			s->head[i] = *b;
	}
	bpf_printk("sampled packet %llu: %u bytes", n, s->len);
	bpf_ringbuf_submit(s, 0);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
