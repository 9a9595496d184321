/* tcp.h: TCP segments and the sockets they belong to, for the tcp-state lab.
 *
 * A segment is parsed as every other header here (parsing.h): checked right before it is
 * handed out, NULL when it is malformed, and the caller then passes the packet untouched. A
 * connection is named by its 4-tuple as the server sees it: the client's address and port,
 * then the server's. The same key is built from an arriving segment (XDP, TC) and from a
 * socket (sock_ops), so that programs at different hooks can share one map.
 */
#ifndef BPFLAB_TCP_H
#define BPFLAB_TCP_H

#include <uapi/linux/bpf.h>
#include <linux/tcp.h>
#include "parsing.h"

#define TCP_MIN_HLEN 20 /* a TCP header without options (data offset 5) */
#define TCP_MAX_HLEN 60 /* the longest: data offset 15, forty bytes of options */
/* Slots of a per-state table: 0 for "no socket" (or no entry), then the kernel's states,
 * BPF_TCP_ESTABLISHED (1) to BPF_TCP_NEW_SYN_RECV (12). */
#define NO_SOCKET   0
#define STATE_SLOTS BPF_TCP_MAX_STATES

/* A connection as the server sees it. Addresses in network order, as in the IPv4 header;
 * ports in host order, so that user space reads them as plain numbers. */
struct flow {
	__be32 client_ip;
	__be32 server_ip;
	__u16 client_port;
	__u16 server_port;
};

/* An IPv4 TCP segment: the IPv4 header (not a fragment) and the TCP header with all its
 * options inside the packet. Returns the TCP header and sets `*ip`, or NULL to pass. */
static __always_inline struct tcphdr *parse_tcp_segment(struct cursor *c, struct iphdr **ip)
{
	struct ethhdr *eth = parse_ethhdr(c);
	struct tcphdr *tcp;
	__u32 hdr_len;

	if (!eth || eth->h_proto != bpf_htons(ETH_P_IP))
		return NULL;
	*ip = parse_iphdr(c);
	if (!*ip || (*ip)->protocol != IPPROTO_TCP)
		return NULL;
	if ((*ip)->frag_off & bpf_htons(IP_MF | IP_OFFSET)) /* a fragment: the kernel reassembles it */
		return NULL;
	tcp = c->pos;
	if ((void *)(tcp + 1) > c->end) /* the check the verifier needs */
		return NULL;
	hdr_len = tcp->doff * 4;
	if (hdr_len < TCP_MIN_HLEN)            /* a data offset below 5 is malformed */
		return NULL;
	if (c->pos + hdr_len > c->end)         /* options cut short by the end of the packet */
		return NULL;
	c->pos += hdr_len;
	return tcp;
}

/* The bytes of data a segment carries: the IP length minus both headers (0 if it lies). */
static __always_inline __u32 tcp_payload_len(const struct iphdr *ip, const struct tcphdr *tcp)
{
	__u32 total = bpf_ntohs(ip->tot_len), headers = ip->ihl * 4 + tcp->doff * 4;

	return total > headers ? total - headers : 0;
}

/* The connection an arriving segment belongs to (it comes from the client). */
static __always_inline struct flow flow_of_segment(const struct iphdr *ip, const struct tcphdr *tcp)
{
	struct flow key = {
		.client_ip = ip->saddr,
		.server_ip = ip->daddr,
		.client_port = bpf_ntohs(tcp->source),
		.server_port = bpf_ntohs(tcp->dest),
	};
	return key;
}

/* The socket lookup's question for an arriving segment: which socket of this host would get
 * it? Source and destination as on the wire (network order): the kernel's own view. */
static __always_inline struct bpf_sock_tuple tuple_of_segment(const struct iphdr *ip,
							       const struct tcphdr *tcp)
{
	struct bpf_sock_tuple tuple = {
		.ipv4 = {.saddr = ip->saddr, .daddr = ip->daddr, .sport = tcp->source, .dport = tcp->dest},
	};

	return tuple;
}

#endif /* BPFLAB_TCP_H */
