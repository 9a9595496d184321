/* Lab 0, hello-xdp: count the packets that arrive, per IP protocol, and let them all pass.
 *
 * The program runs in the driver for every frame that reaches the interface, before the
 * kernel has built anything for it. It reads the IP protocol number (ICMP 1, TCP 6, UDP 17,
 * ICMPv6 58), adds one to that protocol's counter, and returns XDP_PASS so that the kernel
 * handles the frame as if nothing had happened. User space reads the counters from the map.
 */
#include "parsing.h"

/* One counter per IP protocol number. Per-CPU: each CPU has its own copy of every counter,
 * so two CPUs counting at once never race; user space adds the copies up. */
BPF_PERCPU_ARRAY(proto_count, __u64, 256);

int hello_xdp(struct xdp_md *ctx)
{
	/* SOLUTION: parse Ethernet, then IPv4 or IPv6, and count the protocol in proto_count */
	struct cursor c = cursor_start(ctx);
	struct ethhdr *eth;
	__u32 proto;
	__u64 *count;

	eth = parse_ethhdr(&c);
	if (!eth)
		return XDP_PASS; /* shorter than an Ethernet header: not ours to judge */

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = parse_iphdr(&c);

		if (!ip)
			return XDP_PASS;
		proto = ip->protocol;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = parse_ipv6hdr(&c);

		if (!ip6)
			return XDP_PASS;
		proto = ip6->nexthdr;
	} else {
		return XDP_PASS; /* ARP and friends are not IP: nothing to count */
	}

	/* A lookup may return NULL as far as the verifier knows, even in an array. */
	count = proto_count.lookup(&proto);
	if (count)
		*count += 1; /* no atomic needed: this CPU's copy is ours alone */
	/* END SOLUTION */
	return XDP_PASS;
}
