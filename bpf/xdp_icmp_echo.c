/* Lab 1, xdp-icmp: a ping server in the driver hook.
 *
 * For an ICMP echo request addressed to this server (IPv4 type 8, IPv6 type 128), the program
 * turns the frame it received into the reply, in place: MAC and IP addresses swapped, a fresh
 * TTL, type "echo reply", both checksums updated, identifier, sequence and payload untouched.
 * Then XDP_TX sends it back out of the interface it came in on; the kernel never sees it.
 *
 * Everything else goes to the kernel untouched (XDP_PASS): other protocols and ICMP types,
 * requests for other addresses, fragments, IP options, VLAN tags, frames that are truncated
 * or whose checksums are wrong. A server must never answer what the kernel itself would not.
 *
 * At XDP there is no checksum helper for this: the updates are done by hand (checksum.h).
 */
#include "parsing.h"
#include "checksum.h"
#include "echo.h"

/* The server's own addresses, at key 0, filled by the loader (bpflab.echo.configure). */
BPF_ARRAY(server, struct server_addrs, 1);

/* Replies sent, by kind (REPLIES_V4, REPLIES_V6). Per-CPU, so that no two CPUs race. */
BPF_PERCPU_ARRAY(replies, __u64, REPLY_KINDS);

static __always_inline void count_reply(__u32 kind)
{
	__u64 *count = replies.lookup(&kind);

	if (count)
		*count += 1;
}

/* Answer an ICMPv4 echo request in place: XDP_TX, or XDP_PASS if it is not one for us. */
static __always_inline int echo_v4(struct xdp_md *ctx, struct cursor *c, struct ethhdr *eth,
				   struct server_addrs *me)
{
	/* SOLUTION: check that this is an intact echo request for us, then make it the reply */
	struct iphdr *ip = parse_iphdr(c);
	struct icmphdr *icmp;
	__u32 sum = 0, icmp_len;
	__u16 old;
	__be32 addr;

	/* Only plain 20-byte headers: options (ihl > 5) are left to the kernel. */
	if (!ip || ip->version != 4 || ip->ihl != 5 || ip->protocol != IPPROTO_ICMP)
		return XDP_PASS;
	/* For us, and from a source the kernel would answer: not a martian, not our own address. */
	if (ip->daddr != me->ipv4 || ip->saddr == me->ipv4 || !ipv4_source_ok(ip->saddr))
		return XDP_PASS;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)) /* fragments: only the kernel reassembles */
		return XDP_PASS;
	if (csum_add_bytes(ip, c->end, sizeof(*ip), &sum) || csum_fold16(sum) != 0xffff)
		return XDP_PASS;                          /* a damaged IP header */
	if (bpf_ntohs(ip->tot_len) < sizeof(*ip) + sizeof(*icmp))
		return XDP_PASS;
	icmp_len = bpf_ntohs(ip->tot_len) - sizeof(*ip);

	icmp = parse_icmphdr(c);
	if (!icmp || icmp->type != ICMP_ECHO || icmp->code != 0)
		return XDP_PASS;
	sum = 0; /* the ICMP checksum covers the ICMP message, payload included */
	if (csum_add_xdp(ctx, icmp, icmp_len, &sum) || csum_fold16(sum) != 0xffff)
		return XDP_PASS;                          /* truncated, or a damaged message */

	/* From here on the frame becomes the reply. */
	swap_macs(eth);
	addr = ip->saddr;                             /* swapping the addresses leaves the */
	ip->saddr = ip->daddr;                        /* IP checksum as it is: the sum of  */
	ip->daddr = addr;                             /* the words does not change         */

	old = *(__u16 *)&ip->ttl;                     /* TTL and protocol share a word */
	ip->ttl = REPLY_TTL;
	ip->check = csum_replace16(ip->check, old, *(__u16 *)&ip->ttl);

	old = *(__u16 *)icmp;                         /* type and code share a word */
	icmp->type = ICMP_ECHOREPLY;
	icmp->checksum = csum_replace16(icmp->checksum, old, *(__u16 *)icmp);

	count_reply(REPLIES_V4);
	return XDP_TX;
	/* STARTER: return XDP_PASS; */
	/* END SOLUTION */
}

/* Answer an ICMPv6 echo request in place: XDP_TX, or XDP_PASS if it is not one for us. */
static __always_inline int echo_v6(struct xdp_md *ctx, struct cursor *c, struct ethhdr *eth,
				   struct server_addrs *me)
{
	/* SOLUTION: the same for IPv6; its checksum also covers a pseudo-header of the addresses */
	struct ipv6hdr *ip6 = parse_ipv6hdr(c);
	struct icmp6hdr *icmp6;
	struct in6_addr addr;
	__u32 sum = 0, len;
	__u16 old;

	/* Extension headers (nexthdr other than ICMPv6) are left to the kernel. */
	if (!ip6 || ip6->version != 6 || ip6->nexthdr != IPPROTO_ICMPV6)
		return XDP_PASS;
	if (!ipv6_equal(&ip6->daddr, me->ipv6) || ipv6_equal(&ip6->saddr, me->ipv6) ||
	    !ipv6_source_ok(&ip6->saddr))
		return XDP_PASS;
	len = bpf_ntohs(ip6->payload_len);
	if (len < sizeof(*icmp6))
		return XDP_PASS;

	icmp6 = parse_icmp6hdr(c);
	if (!icmp6 || icmp6->icmp6_type != ICMPV6_ECHO_REQUEST || icmp6->icmp6_code != 0)
		return XDP_PASS;
	/* Pseudo-header: source, destination, upper-layer length, next header. */
	if (csum_add_bytes(&ip6->saddr, c->end, 2 * sizeof(addr), &sum))
		return XDP_PASS;
	sum += bpf_htons(len) + bpf_htons(IPPROTO_ICMPV6);
	if (csum_add_xdp(ctx, icmp6, len, &sum) || csum_fold16(sum) != 0xffff)
		return XDP_PASS;

	swap_macs(eth);
	addr = ip6->saddr;                            /* the pseudo-header sum is unchanged */
	ip6->saddr = ip6->daddr;                      /* by the swap, like IPv4's header   */
	ip6->daddr = addr;
	ip6->hop_limit = REPLY_TTL;                   /* not covered by any checksum */

	old = *(__u16 *)icmp6;
	icmp6->icmp6_type = ICMPV6_ECHO_REPLY;
	icmp6->icmp6_cksum = csum_replace16(icmp6->icmp6_cksum, old, *(__u16 *)icmp6);

	count_reply(REPLIES_V6);
	return XDP_TX;
	/* STARTER: return XDP_PASS; */
	/* END SOLUTION */
}

int xdp_icmp_echo(struct xdp_md *ctx)
{
	struct cursor c = cursor_start(ctx);
	struct ethhdr *eth = parse_ethhdr(&c);
	__u32 key = 0;
	struct server_addrs *me = server.lookup(&key);

	if (!eth || !me || !eth_to_me(eth, me->mac))
		return XDP_PASS;
	/* A VLAN tag (0x8100) lands here too, and is passed: the kernel handles it. */
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return echo_v4(ctx, &c, eth, me);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return echo_v6(ctx, &c, eth, me);
	return XDP_PASS;
}
