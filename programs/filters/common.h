/* Shared by the example filters: headers and the small parsing helpers every filter needs.
 * Built with: clang-19 -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -c NAME.c */
#ifndef SLUICE_FILTERS_COMMON_H
#define SLUICE_FILTERS_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

/* The IPv4 header after an untagged Ethernet header, or NULL. */
static __always_inline struct iphdr *ipv4_header(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return NULL;
	if (ip->ihl < 5)
		return NULL;
	return ip;
}

#endif
