/* dns_reply_counter.c: the load generator's other half, on the client's veth (not a lab).
 *
 * Counts the DNS answers that come back (UDP from ANSWER_PORT: 53, or NSD's port when the
 * bench drives NSD) and drops them, so that the client's kernel spends nothing on them;
 * everything else is passed. Used by bpflab.tools.bench to measure a DNS server's throughput
 * without any socket on the client's side in the way.
 */
#include "parsing.h"
#include "dns.h"

#ifndef ANSWER_PORT
#define ANSWER_PORT DNS_PORT
#endif

BPF_PERCPU_ARRAY(replies, __u64, 1);

int dns_reply_counter(struct xdp_md *ctx)
{
	struct cursor c = cursor_start(ctx);
	struct ethhdr *eth = parse_ethhdr(&c);
	struct udphdr *udp;
	__u32 zero = 0;
	__u64 *count;

	if (!eth)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = parse_iphdr(&c);

		if (!ip || ip->protocol != IPPROTO_UDP)
			return XDP_PASS;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = parse_ipv6hdr(&c);

		if (!ip6 || ip6->nexthdr != IPPROTO_UDP)
			return XDP_PASS;
	} else {
		return XDP_PASS;
	}
	udp = parse_udphdr(&c);
	if (!udp || udp->source != bpf_htons(ANSWER_PORT))
		return XDP_PASS;
	count = replies.lookup(&zero);
	if (count)
		*count += 1;
	return XDP_DROP;
}
