/* Lab 2, tc-icmp: the same ping server, one hook higher, at TC ingress.
 *
 * By the time TC runs, the kernel has built a socket buffer (sk_buff) for the frame, and the
 * program may call helpers that XDP lacks: bpf_skb_store_bytes() writes into the packet, and
 * bpf_l3_csum_replace() / bpf_l4_csum_replace() update the IP and ICMP checksums for a
 * changed field, so no checksum arithmetic is written by hand here. bpf_redirect() to the
 * interface the frame came in on sends the reply out (TC has no XDP_TX).
 *
 * The checks are the XDP lab's: answer only intact echo requests addressed to this server,
 * and let the kernel have everything else, untouched (TC_ACT_OK).
 */
#include <uapi/linux/pkt_cls.h>
#include "parsing.h"
#include "checksum.h"
#include "echo.h"

/* Where the fields live: the echo server answers only 20-byte IPv4 headers, so every offset
 * is a constant. */
#define IP_OFF        ETH_HLEN
#define IP_TTL_OFF    (IP_OFF + offsetof(struct iphdr, ttl))
#define IP_SRC_OFF    (IP_OFF + offsetof(struct iphdr, saddr))
#define IP_CSUM_OFF   (IP_OFF + offsetof(struct iphdr, check))
#define ICMP_OFF      (IP_OFF + sizeof(struct iphdr))
#define ICMP_CSUM_OFF (ICMP_OFF + offsetof(struct icmphdr, checksum))
#define IP6_HLIM_OFF  (IP_OFF + offsetof(struct ipv6hdr, hop_limit))
#define IP6_SRC_OFF   (IP_OFF + offsetof(struct ipv6hdr, saddr))
#define ICMP6_OFF     (IP_OFF + sizeof(struct ipv6hdr))
#define ICMP6_CSUM_OFF (ICMP6_OFF + offsetof(struct icmp6hdr, icmp6_cksum))

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

/* Swap the MAC addresses with bpf_skb_store_bytes (Ethernet: destination, then source). */
static __always_inline int swap_macs_skb(struct __sk_buff *skb, struct ethhdr *eth)
{
	__u8 macs[2 * ETH_ALEN];

	__builtin_memcpy(macs, eth->h_source, ETH_ALEN);
	__builtin_memcpy(macs + ETH_ALEN, eth->h_dest, ETH_ALEN);
	return bpf_skb_store_bytes(skb, 0, macs, sizeof(macs), 0);
}

/* Answer an ICMPv4 echo request: TC_ACT_REDIRECT, or TC_ACT_OK if it is not one for us. */
static __always_inline int echo_v4(struct __sk_buff *skb, struct cursor *c, struct ethhdr *eth,
				   struct server_addrs *me)
{
	/* SOLUTION: check the request as at XDP, then rewrite it with the skb helpers */
	struct iphdr *ip = parse_iphdr(c);
	struct icmphdr *icmp;
	__u32 sum = 0, icmp_len;
	__be32 addrs[2];
	__u16 old_ttl, new_ttl, old_type, new_type;

	if (!ip || ip->version != 4 || ip->ihl != 5 || ip->protocol != IPPROTO_ICMP)
		return TC_ACT_OK;
	/* For us, and from a source the kernel would answer: not a martian, not our own address. */
	if (ip->daddr != me->ipv4 || ip->saddr == me->ipv4 || !ipv4_source_ok(ip->saddr))
		return TC_ACT_OK;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return TC_ACT_OK;
	if (csum_add_bytes(ip, c->end, sizeof(*ip), &sum) || csum_fold16(sum) != 0xffff)
		return TC_ACT_OK;
	if (bpf_ntohs(ip->tot_len) < sizeof(*ip) + sizeof(*icmp))
		return TC_ACT_OK;
	icmp_len = bpf_ntohs(ip->tot_len) - sizeof(*ip);
	icmp = parse_icmphdr(c);
	if (!icmp || icmp->type != ICMP_ECHO || icmp->code != 0)
		return TC_ACT_OK;
	sum = 0;
	if (csum_add_skb(skb, icmp, icmp_len, &sum) || csum_fold16(sum) != 0xffff)
		return TC_ACT_OK;

	/* Read what the reply needs before the first helper call: after it, every packet
	 * pointer (eth, ip, icmp) is invalid, and the verifier will not let us use them. */
	addrs[0] = ip->daddr;
	addrs[1] = ip->saddr;
	old_ttl = *(__u16 *)&ip->ttl;
	new_ttl = bpf_htons(REPLY_TTL << 8 | IPPROTO_ICMP);
	old_type = *(__u16 *)icmp;
	new_type = bpf_htons(ICMP_ECHOREPLY << 8);

	if (swap_macs_skb(skb, eth) ||
	    bpf_skb_store_bytes(skb, IP_SRC_OFF, addrs, sizeof(addrs), 0) ||
	    /* The swap leaves the IP checksum as it is; the TTL does not. */
	    bpf_l3_csum_replace(skb, IP_CSUM_OFF, old_ttl, new_ttl, sizeof(new_ttl)) ||
	    bpf_skb_store_bytes(skb, IP_TTL_OFF, &new_ttl, sizeof(new_ttl), 0) ||
	    bpf_l4_csum_replace(skb, ICMP_CSUM_OFF, old_type, new_type, sizeof(new_type)) ||
	    bpf_skb_store_bytes(skb, ICMP_OFF, &new_type, sizeof(new_type), 0))
		return TC_ACT_SHOT; /* a half-built reply must never leave */

	count_reply(REPLIES_V4);
	return bpf_redirect(skb->ifindex, 0); /* out of the interface it came in on */
	/* STARTER: return TC_ACT_OK; */
	/* END SOLUTION */
}

/* Answer an ICMPv6 echo request: TC_ACT_REDIRECT, or TC_ACT_OK if it is not one for us. */
static __always_inline int echo_v6(struct __sk_buff *skb, struct cursor *c, struct ethhdr *eth,
				   struct server_addrs *me)
{
	/* SOLUTION: the same for IPv6 (the hop limit is in no checksum) */
	struct ipv6hdr *ip6 = parse_ipv6hdr(c);
	struct icmp6hdr *icmp6;
	struct in6_addr addrs[2];
	__u32 sum = 0, len;
	__u8 hop_limit = REPLY_TTL;
	__u16 old_type, new_type;

	if (!ip6 || ip6->version != 6 || ip6->nexthdr != IPPROTO_ICMPV6)
		return TC_ACT_OK;
	if (!ipv6_equal(&ip6->daddr, me->ipv6) || ipv6_equal(&ip6->saddr, me->ipv6) ||
	    !ipv6_source_ok(&ip6->saddr))
		return TC_ACT_OK;
	len = bpf_ntohs(ip6->payload_len);
	if (len < sizeof(*icmp6))
		return TC_ACT_OK;
	icmp6 = parse_icmp6hdr(c);
	if (!icmp6 || icmp6->icmp6_type != ICMPV6_ECHO_REQUEST || icmp6->icmp6_code != 0)
		return TC_ACT_OK;
	if (csum_add_bytes(&ip6->saddr, c->end, sizeof(addrs), &sum))
		return TC_ACT_OK;
	sum += bpf_htons(len) + bpf_htons(IPPROTO_ICMPV6);
	if (csum_add_skb(skb, icmp6, len, &sum) || csum_fold16(sum) != 0xffff)
		return TC_ACT_OK;

	addrs[0] = ip6->daddr;
	addrs[1] = ip6->saddr;
	old_type = *(__u16 *)icmp6;
	new_type = bpf_htons(ICMPV6_ECHO_REPLY << 8);

	if (swap_macs_skb(skb, eth) ||
	    bpf_skb_store_bytes(skb, IP6_SRC_OFF, addrs, sizeof(addrs), 0) ||
	    bpf_skb_store_bytes(skb, IP6_HLIM_OFF, &hop_limit, sizeof(hop_limit), 0) ||
	    bpf_l4_csum_replace(skb, ICMP6_CSUM_OFF, old_type, new_type, sizeof(new_type)) ||
	    bpf_skb_store_bytes(skb, ICMP6_OFF, &new_type, sizeof(new_type), 0))
		return TC_ACT_SHOT;

	count_reply(REPLIES_V6);
	return bpf_redirect(skb->ifindex, 0);
	/* STARTER: return TC_ACT_OK; */
	/* END SOLUTION */
}

int tc_icmp_echo(struct __sk_buff *skb)
{
	struct cursor c;
	struct ethhdr *eth;
	__u32 key = 0;
	struct server_addrs *me = server.lookup(&key);

	/* The kernel takes a VLAN tag off the frame before TC sees it and notes it in the skb:
	 * such a frame belongs to a VLAN interface, not to this server. */
	if (!me || skb->vlan_present)
		return TC_ACT_OK;
	/* A large frame may sit partly outside the linear buffer that direct access covers;
	 * pull it all in, so that the checksum can be verified over the whole message. */
	if (bpf_skb_pull_data(skb, skb->len))
		return TC_ACT_OK;
	c = cursor_start_skb(skb);
	eth = parse_ethhdr(&c);
	if (!eth || !eth_to_me(eth, me->mac))
		return TC_ACT_OK;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return echo_v4(skb, &c, eth, me);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		return echo_v6(skb, &c, eth, me);
	return TC_ACT_OK;
}
