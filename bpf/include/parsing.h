/* parsing.h: bounds-checked header parsing shared by every lab program.
 *
 * The verifier accepts a read of packet memory only if it has seen, on the same path, a check
 * that the bytes lie before ctx->data_end. A cursor keeps the position of the next header and
 * the end of the packet together, and every helper here checks the header it is about to
 * return right before handing it out. A helper returns NULL when the packet is too short:
 * the caller then passes the packet to the kernel untouched.
 */
#ifndef BPFLAB_PARSING_H
#define BPFLAB_PARSING_H

#include <uapi/linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/icmp.h>
#include <linux/icmpv6.h>
#include <linux/udp.h>

/* Flags of the IPv4 fragment field (the kernel keeps them in a header BPF cannot include). */
#ifndef IP_MF
#define IP_MF     0x2000 /* more fragments follow */
#define IP_OFFSET 0x1FFF /* where this fragment starts, in 8-byte units */
#endif

/* Hide a value from the optimiser, as libbpf's bpf_helpers.h does. Without it, clang turns
 * the bounds check of a loop over the packet into pointer arithmetic (`~ptr`, `end - ptr`)
 * that the verifier refuses ("bitwise operator ^= on pointer prohibited"). */
#ifndef barrier_var
#define barrier_var(var) asm volatile("" : "+r"(var))
#endif

/* Where the next header starts, and where the packet ends. */
struct cursor {
	void *pos;
	void *end;
};

/* At XDP: the frame, from its Ethernet header to its end. */
static __always_inline struct cursor cursor_start(struct xdp_md *ctx)
{
	struct cursor c = {
		.pos = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
	};
	return c;
}

/* At TC: the same for a socket buffer. Only its linear part is covered: call
 * bpf_skb_pull_data() first to reach further. Any helper that may change the packet
 * (bpf_skb_store_bytes, bpf_l3/l4_csum_replace, ...) makes every packet pointer invalid:
 * start a new cursor after it. */
static __always_inline struct cursor cursor_start_skb(struct __sk_buff *skb)
{
	struct cursor c = {
		.pos = (void *)(long)skb->data,
		.end = (void *)(long)skb->data_end,
	};
	return c;
}

/* Ethernet header. Returns it, or NULL if the frame is shorter than 14 bytes. */
static __always_inline struct ethhdr *parse_ethhdr(struct cursor *c)
{
	struct ethhdr *eth = c->pos;

	if ((void *)(eth + 1) > c->end) /* the check the verifier needs */
		return NULL;
	c->pos = eth + 1;
	return eth;
}

/* IPv4 header, options included. NULL if truncated or if the length field lies. */
static __always_inline struct iphdr *parse_iphdr(struct cursor *c)
{
	struct iphdr *ip = c->pos;
	__u32 hdr_len;

	if ((void *)(ip + 1) > c->end)
		return NULL;
	hdr_len = ip->ihl * 4;
	if (hdr_len < sizeof(*ip))        /* ihl < 5 is malformed */
		return NULL;
	if (c->pos + hdr_len > c->end)    /* options run past the packet */
		return NULL;
	c->pos += hdr_len;
	return ip;
}

/* IPv6 fixed header (extension headers are left to the caller). NULL if truncated. */
static __always_inline struct ipv6hdr *parse_ipv6hdr(struct cursor *c)
{
	struct ipv6hdr *ip6 = c->pos;

	if ((void *)(ip6 + 1) > c->end)
		return NULL;
	c->pos = ip6 + 1;
	return ip6;
}

/* ICMP header (type, code, checksum, then id and sequence for echo). NULL if truncated. */
static __always_inline struct icmphdr *parse_icmphdr(struct cursor *c)
{
	struct icmphdr *icmp = c->pos;

	if ((void *)(icmp + 1) > c->end)
		return NULL;
	c->pos = icmp + 1;
	return icmp;
}

/* ICMPv6 header, same layout as ICMP's first 8 bytes. NULL if truncated. */
static __always_inline struct icmp6hdr *parse_icmp6hdr(struct cursor *c)
{
	struct icmp6hdr *icmp6 = c->pos;

	if ((void *)(icmp6 + 1) > c->end)
		return NULL;
	c->pos = icmp6 + 1;
	return icmp6;
}

/* UDP header. NULL if truncated. (Its length field is the caller's to check.) */
static __always_inline struct udphdr *parse_udphdr(struct cursor *c)
{
	struct udphdr *udp = c->pos;

	if ((void *)(udp + 1) > c->end)
		return NULL;
	c->pos = udp + 1;
	return udp;
}

/* Swap the two MAC addresses of a frame in place: the first step of any reply. In 16-bit
 * words, three each way: __builtin_memcpy of a byte array copies byte by byte (clang cannot
 * assume more alignment), which costs three times the instructions. */
static __always_inline void swap_macs(struct ethhdr *eth)
{
	__u16 *dest = (__u16 *)eth->h_dest, *source = (__u16 *)eth->h_source, word;
	int i;

#pragma unroll
	for (i = 0; i < ETH_ALEN / 2; i++) {
		word = dest[i];
		dest[i] = source[i];
		source[i] = word;
	}
}

/* Is a frame addressed to our own MAC? XDP and TC also see frames for other hosts (on a
 * virtual or promiscuous link), which the kernel drops: a server must not answer those. A
 * broadcast or multicast frame is for us too, but a reply made by swapping its MACs would
 * come from a group address: leave those to the kernel. */
static __always_inline int eth_to_me(const struct ethhdr *eth, const __u8 mine[ETH_ALEN])
{
	const __u16 *dest = (const __u16 *)eth->h_dest, *own = (const __u16 *)mine;

	return dest[0] == own[0] && dest[1] == own[1] && dest[2] == own[2]; /* 16 bits at a time */
}

/* Should a server answer this IPv4 source itself? Not loopback (127/8), multicast (224/4) or
 * the limited broadcast: the kernel drops such "martian" sources before any socket sees them,
 * so a server must not answer them either. Nor 0.0.0.0/8 ("this network"): some kernels drop
 * it, others (6.18, given a route) answer it; passing it lets the kernel that runs decide.
 * A source equal to the server's own address is martian too; the caller, who knows that
 * address, checks it. */
static __always_inline int ipv4_source_ok(__be32 saddr)
{
	__u32 host = bpf_ntohl(saddr);

	return (host >> 24) != 0 && (host >> 24) != 127 && (host >> 28) != 0xe && host != 0xffffffff;
}

/* The same for IPv6: not loopback ::1 or multicast (ff00::/8), which the kernel drops; not
 * the unspecified address :: or an IPv4-mapped one (::ffff:0:0/96), which some kernels drop
 * and others answer: passed, they are the kernel's to decide. The server's own address, again,
 * is the caller's to check. */
static __always_inline int ipv6_source_ok(const struct in6_addr *saddr)
{
	const __u32 *w = saddr->in6_u.u6_addr32;

	if (saddr->in6_u.u6_addr8[0] == 0xff)
		return 0;
	if (w[0] | w[1])
		return 1;
	if (w[2] == bpf_htonl(0x0000ffff))
		return 0;
	return w[2] != 0 || (w[3] != 0 && w[3] != bpf_htonl(1));
}

/* Is an IPv6 address equal to the 16 bytes at `b`? Compared 32 bits at a time. */
static __always_inline int ipv6_equal(const struct in6_addr *a, const __be32 b[4])
{
	const __u32 *w = a->in6_u.u6_addr32;

	return w[0] == b[0] && w[1] == b[1] && w[2] == b[2] && w[3] == b[3];
}

#endif /* BPFLAB_PARSING_H */
