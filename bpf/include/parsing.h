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

/* Where the next header starts, and where the packet ends. */
struct cursor {
	void *pos;
	void *end;
};

static __always_inline struct cursor cursor_start(struct xdp_md *ctx)
{
	struct cursor c = {
		.pos = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
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

#endif /* BPFLAB_PARSING_H */
