// expect: accept
// Samples the first 32 bytes of long packets into a ring buffer.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} samples SEC(".maps");

SEC("xdp")
int sample(struct xdp_md *ctx)
{
	unsigned char *data = (void *)(long)ctx->data;
	unsigned char *data_end = (void *)(long)ctx->data_end;
	if (data + 32 > data_end)
		return XDP_PASS;
	unsigned char *rec = bpf_ringbuf_reserve(&samples, 32, 0);
	if (!rec)
		return XDP_PASS;
	__builtin_memcpy(rec, data, 32);
	bpf_ringbuf_submit(rec, 0);
	return XDP_PASS;
}
char LICENSE[] SEC("license") = "GPL";
