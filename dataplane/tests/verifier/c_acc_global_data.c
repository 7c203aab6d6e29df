// expect: accept
// Global data: a constant threshold in .rodata and a counter in .bss.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

const volatile __u32 min_len = 60;
__u64 dropped;

SEC("xdp")
int short_drop(struct xdp_md *ctx)
{
	if (ctx->data_end - ctx->data < min_len) {
		__sync_fetch_and_add(&dropped, 1);
		return XDP_DROP;
	}
	return XDP_PASS;
}
char LICENSE[] SEC("license") = "GPL";
