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

SEC("xdp")
int gen_tx(struct xdp_md *ctx)
{
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
