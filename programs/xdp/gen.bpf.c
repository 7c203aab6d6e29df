// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * sluice live-frames transmit engine (loadgen).
 *
 * `gen_tx` is run by userspace with BPF_PROG_RUN and BPF_F_TEST_XDP_LIVE_FRAMES: the
 * kernel builds each frame from the template in a page pool, runs the program, and
 * turns XDP_TX into a redirect back out of the context's ingress interface, which
 * transmits it. On veth that is ndo_xdp_xmit, so the frame appears on the peer.
 * XDP_TX (rather than bpf_redirect to an ifindex) needs no map and no per-run
 * configuration, and works on kernel 6.18.
 *
 * A frame pushed into a veth by ndo_xdp_xmit is dropped unless the peer runs a native
 * XDP program (that is what enables its NAPI receive path). The dataplane's steering
 * program fills that role on a dut port; `sink_drop` and `sink_pass` do when a sender is
 * measured or tested on its own.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

SEC("xdp")
int gen_tx(struct xdp_md *ctx)
{
	return XDP_TX;
}

/*
 * `gen_stamp` is `gen_tx` for measured traffic: it writes the 16-byte stamp
 * (dataplane/src/loadgen/stamp.rs: magic 0x5c1e, stream, version 1, u32 sequence,
 * u64 CLOCK_MONOTONIC ns, big-endian) over the last bytes of the frame, optionally
 * sets a 16-bit flow field (UDP/TCP source port, ICMP echo id) to
 * flow_base + seq % flows (a wrapping counter: no division), and fixes the L4 checksum incrementally (RFC 1624).
 *
 * The page pool recycles pages without restoring the template, so a frame may hold
 * the previous run's stamp: the checksum update takes the words actually in the
 * frame as the old values, which is right whatever they are.
 *
 * The layout is fixed by the loader in read-only globals before verification; the
 * verifier treats them as constants, so the bounds checks below are on known offsets.
 */
const volatile __u32 stamp_off = 0;
const volatile __u32 csum_off = 0;	/* 0: no L4 checksum to fix */
const volatile __u8 csum_odd = 0;	/* stamp at an odd offset from the L4 header */
const volatile __u8 csum_udp = 0;	/* a 0 result is sent as 0xffff */
const volatile __u32 flow_off = 0;	/* 0: one flow */
const volatile __u32 flows = 1;
const volatile __u16 flow_base = 0;
const volatile __u8 stream = 0;

/* Frames this instance has stamped, the flow of the next one, and the time of the current
 * group of STAMP_TIME_EVERY frames; one thread runs an instance, so no atomics. */
__u64 stamp_seq = 0;
__u32 stamp_flow = 0;
__u64 stamp_now = 0;

/*
 * The clock is read once per this many frames (the kernel's live-frames batch): what the
 * AF_XDP engine does per TX batch too. A frame's stamp is then at most one batch early
 * (about 10 us at 7 Mpps), and the clock read leaves the per-frame cost.
 */
#define STAMP_TIME_EVERY 64

static __always_inline __u32 fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return s;
}

/* Adds the change old -> new of one 16-bit word to a one's-complement sum. */
static __always_inline __u32 change(__u32 sum, __u16 old, __u16 new)
{
	return sum + (__u16)~old + new;
}

SEC("xdp")
int gen_stamp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u64 n = stamp_seq++;
	__u64 now;
	__u16 words[8];
	__u16 *s = data + stamp_off;
	__u32 sum = 0, flow_sum = 0;
	int i;

	if ((void *)(s + 8) > end)
		return XDP_ABORTED;
	if ((n & (STAMP_TIME_EVERY - 1)) == 0)
		stamp_now = bpf_ktime_get_ns();
	now = stamp_now;
	words[0] = bpf_htons(0x5c1e);
	words[1] = bpf_htons((__u16)stream << 8 | 1);
	words[2] = bpf_htons((__u16)(n >> 16));
	words[3] = bpf_htons((__u16)n);
	words[4] = bpf_htons((__u16)(now >> 48));
	words[5] = bpf_htons((__u16)(now >> 32));
	words[6] = bpf_htons((__u16)(now >> 16));
	words[7] = bpf_htons((__u16)now);
#pragma unroll
	for (i = 0; i < 8; i++) {
		sum = change(sum, s[i], words[i]);
		s[i] = words[i];
	}
	if (flows > 1) {
		__u16 *f = data + flow_off;
		__u16 v;

		if ((void *)(f + 1) > end)
			return XDP_ABORTED;
		v = bpf_htons((__u16)(flow_base + stamp_flow));
		if (++stamp_flow >= flows)
			stamp_flow = 0;
		flow_sum = change(0, *f, v);
		*f = v;
	}
	if (csum_off) {
		__u16 *c = data + csum_off;
		__u16 folded = fold(sum);
		__u16 res;

		if ((void *)(c + 1) > end)
			return XDP_ABORTED;
		if (csum_odd)
			folded = (__u16)(folded << 8 | folded >> 8);
		res = ~fold((__u16)~*c + folded + fold(flow_sum));
		if (csum_udp && res == 0)
			res = 0xffff;
		*c = res;
	}
	return XDP_TX;
}

SEC("xdp")
int sink_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}

SEC("xdp")
int sink_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
