/* Lab 3, xdp-dns: an authoritative DNS server's fast path, in the driver hook.
 *
 * For a plain query (UDP port 53, one question, type A or AAAA, class IN) whose name is in the
 * `records` map, the program turns the frame it received into the answer, in place: MACs, IP
 * addresses and UDP ports swapped, the header flags of a response (QR, AA, RD copied),
 * the question left as it was (so its letters keep their case), one answer record per address
 * appended at the tail (bpf_xdp_adjust_tail), an EDNS0 OPT record if the query had one, and
 * fresh IP and UDP checksums. XDP_TX sends it back; the kernel never sees the query.
 *
 * Everything else goes to the kernel untouched (XDP_PASS), where the user-space server
 * (bpflab/dns_server.py) answers it from the same records: names not in the map, other types
 * and classes, responses, other opcodes, several questions, compression pointers, names too
 * long for the map's key, TCP, fragments, damaged checksums, malformed messages. The fast path
 * only ever says what the full server would say, or nothing.
 */
#include "parsing.h"
#include "checksum.h"
#include "server.h"
#include "dns.h"

#define MAX_RECORDS 1024 /* record sets (a name and a type) the map holds */
#define MAX_GROWTH  256  /* bytes a query may grow by: XDP_PACKET_HEADROOM */
/* Bytes up to the end of an IPv6 query's question: Ethernet + IPv6 (14 + 40), UDP (8), the DNS
 * header (12), the name, its type and class (4). resize() moves at most these. */
#define MAX_KEEP    (54 + 8 + 12 + MAX_NAME_LEN + 4)


/* The server's own addresses, at key 0, filled by the loader (bpflab.echo.configure). */
BPF_ARRAY(server, struct server_addrs, 1);

/* The records: (type, lower-cased name) -> addresses. Filled from the records file by
 * bpflab.dns_records; the user-space server reads the same file. */
BPF_HASH(records, struct dns_key, struct dns_rrset, MAX_RECORDS);

/* Where resize() moves the headers through; one per CPU, so that no two CPUs share it. */
#define SCRATCH_SIZE 256 /* a power of two above MAX_KEEP */
struct scratch {
	__u8 bytes[SCRATCH_SIZE];
};
BPF_PERCPU_ARRAY(moved, struct scratch, 1);

/* Answers sent, by kind; answers built by moving the head (see resize); queries passed because
 * the frame had no room at all. Per-CPU, so that no two CPUs race. */
enum { ANSWERS_A, ANSWERS_AAAA, MOVED_HEAD, NO_ROOM, ANSWER_KINDS };
BPF_PERCPU_ARRAY(answers, __u64, ANSWER_KINDS);

/* What the query says, gathered before the frame is changed: after bpf_xdp_adjust_tail every
 * packet pointer is invalid, so offsets and values are kept here instead. */
struct query {
	__u32 l4_off;       /* where the UDP header starts: 34 (IPv4) or 54 (IPv6) */
	__u32 udp_len;      /* the query's UDP length, header included */
	__u32 addr_sum;     /* sum of the two IP addresses, for the UDP pseudo-header */
	__u32 name_len;     /* wire bytes of the question's name */
	__u16 flags;        /* the query's header flags, host order */
	__u16 edns;         /* 1 if the query carried an OPT record */
	__u16 edns_flags;   /* its flags (the DO bit is copied into the answer) */
	__u16 checksum;     /* 1 if the UDP checksum is there to verify (IPv4 may send 0) */
	struct dns_key key; /* the question's type and lower-cased name: the map key */
};

static __always_inline void count_event(__u32 kind)
{
	__u64 *count = answers.lookup(&kind);

	if (count)
		*count += 1;
}

/* An intact IPv4 header of a UDP datagram for us. Returns 0 and fills `q`, or -1 to pass. */
static __always_inline int check_ipv4(struct cursor *c, struct server_addrs *me, struct query *q)
{
	/* SOLUTION: as in lab 1, for UDP; note where UDP starts, its length and the address sum */
	struct iphdr *ip = parse_iphdr(c);
	__u32 sum = 0;

	if (!ip || ip->version != 4 || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return -1;
	/* For us, and from a source the kernel would answer: not a martian, not our own address. */
	if (ip->daddr != me->ipv4 || ip->saddr == me->ipv4 || !ipv4_source_ok(ip->saddr))
		return -1;
	if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)) /* fragments: only the kernel reassembles */
		return -1;
	if (csum_add_bytes(ip, c->end, sizeof(*ip), &sum) || csum_fold16(sum) != 0xffff)
		return -1;
	if (bpf_ntohs(ip->tot_len) < sizeof(*ip))
		return -1;
	q->l4_off = sizeof(struct ethhdr) + sizeof(*ip);
	q->udp_len = bpf_ntohs(ip->tot_len) - sizeof(*ip);
	return csum_add_bytes(&ip->saddr, c->end, 2 * sizeof(ip->saddr), &q->addr_sum);
	/* STARTER: return -1; */
	/* END SOLUTION */
}

/* The same for IPv6: no extension headers, so the next header must be UDP. */
static __always_inline int check_ipv6(struct cursor *c, struct server_addrs *me, struct query *q)
{
	/* SOLUTION: the same for IPv6 */
	struct ipv6hdr *ip6 = parse_ipv6hdr(c);

	if (!ip6 || ip6->version != 6 || ip6->nexthdr != IPPROTO_UDP)
		return -1;
	if (!ipv6_equal(&ip6->daddr, me->ipv6) || ipv6_equal(&ip6->saddr, me->ipv6) ||
	    !ipv6_source_ok(&ip6->saddr))
		return -1;
	q->l4_off = sizeof(struct ethhdr) + sizeof(*ip6);
	q->udp_len = bpf_ntohs(ip6->payload_len);
	return csum_add_bytes(&ip6->saddr, c->end, 2 * sizeof(ip6->saddr), &q->addr_sum);
	/* STARTER: return -1; */
	/* END SOLUTION */
}

/* Read the question's name into q->key.name, letters lower-cased. Returns its length in wire
 * bytes (the final zero included), or -1 to pass: truncated, a compression pointer or a bad
 * label length, or longer than MAX_NAME_LEN. One bounded loop over the bytes: `label_left`
 * counts the bytes left in the current label, so when it is zero the byte read is a length. */
static __always_inline int read_name(__u8 *name, void *end, struct dns_key *key)
{
	/* SOLUTION: walk the labels byte by byte, at most MAX_NAME_LEN bytes */
	__u32 label_left = 0, i;
	__u8 *p, c;

	for (i = 0; i < MAX_NAME_LEN; i++) {
		p = name + i;
		barrier_var(p);
		if ((void *)(p + 1) > end)   /* checked right before each read */
			return -1;
		c = *p;
		if (label_left == 0) {       /* a length byte */
			if (c == 0) {        /* the root label: the name ends here */
				key->name[i] = 0;
				return i + 1;
			}
			if (c > MAX_LABEL_LEN)   /* 0xC0..: a compression pointer */
				return -1;
			label_left = c;
			key->name[i] = c;
		} else {                     /* a letter: DNS ignores case (RFC 4343) */
			if (c >= 'A' && c <= 'Z')
				c += 'a' - 'A';
			key->name[i] = c;
			label_left--;
		}
	}
	return -1;                           /* longer than the map's key */
	/* STARTER: return -1; */
	/* END SOLUTION */
}

/* The UDP datagram: an intact DNS query the fast path may answer. Returns 0 and fills `q`,
 * or -1 to pass. `is_v6`: UDP over IPv6 must carry a checksum (RFC 8200), over IPv4 it may
 * leave it 0. */
static __always_inline int check_query(struct xdp_md *ctx, struct cursor *c, struct query *q,
				       int is_v6)
{
	/* SOLUTION: check UDP, the DNS header, the question and an OPT record if there is one */
	struct udphdr *udp = parse_udphdr(c);
	struct dnshdr *dns;
	struct dns_opt *opt;
	__u8 *tail, *msg_end;
	__u32 rdlength;
	int name_len;

	if (!udp || udp->dest != bpf_htons(DNS_PORT) || udp->source == 0)
		return -1;
	if (bpf_ntohs(udp->len) != q->udp_len || q->udp_len < sizeof(*udp) + sizeof(*dns))
		return -1;
	if (q->udp_len > MAX_QUERY_LEN)      /* keeps the checksum loop short for the verifier */
		return -1;
	if (udp->check == 0 && is_v6)        /* the sum itself: query_checksum_ok() */
		return -1;
	q->checksum = udp->check != 0;
	msg_end = (__u8 *)udp + q->udp_len;

	dns = c->pos;
	if ((void *)(dns + 1) > c->end)
		return -1;
	q->flags = bpf_ntohs(dns->flags);
	if (q->flags & (DNS_QR | DNS_OPCODE | DNS_TC)) /* a response, not a QUERY, truncated */
		return -1;
	if (dns->qdcount != bpf_htons(1) || dns->ancount || dns->nscount ||
	    bpf_ntohs(dns->arcount) > 1)
		return -1;

	name_len = read_name((__u8 *)(dns + 1), c->end, &q->key);
	if (name_len < 0)
		return -1;
	q->name_len = name_len;
	tail = (__u8 *)(dns + 1) + name_len;  /* QTYPE and QCLASS follow the name */
	if ((void *)(tail + 4) > c->end)
		return -1;
	q->key.qtype = (tail[0] << 8) | tail[1];
	if (q->key.qtype != DNS_TYPE_A && q->key.qtype != DNS_TYPE_AAAA)
		return -1;
	if (tail[2] != 0 || tail[3] != DNS_CLASS_IN)
		return -1;
	tail += 4;

	if (!dns->arcount)                   /* nothing may follow the question */
		return tail == msg_end ? 0 : -1;
	opt = (struct dns_opt *)tail;        /* the one additional record must be OPT, version 0 */
	if ((void *)(opt + 1) > c->end)
		return -1;
	if (opt->name != 0 || opt->type != bpf_htons(DNS_TYPE_OPT) || opt->version != 0 ||
	    opt->ext_rcode != 0)
		return -1;
	if ((__u8 *)(opt + 1) + bpf_ntohs(opt->rdlength) != msg_end)
		return -1;
	rdlength = bpf_ntohs(opt->rdlength); /* the options end where the datagram does: */
	if (!edns_options_ok(ctx, q->l4_off + q->udp_len - rdlength, rdlength))
		return -1;                   /* options that lie about their lengths: FORMERR */
	q->edns = 1;                         /* its options (cookies, ...) are not echoed */
	q->edns_flags = bpf_ntohs(opt->flags);
	return 0;
	/* STARTER: return -1; */
	/* END SOLUTION */
}

/* Is the query's UDP checksum right (pseudo-header and whole datagram), or absent (0, which
 * IPv4 allows)? Asked only once the name was found in the map: a query for a name not held is
 * passed whatever its checksum, so the pass path does not pay for the sum. Cheap decisive
 * checks first, the costly one last. */
static __always_inline int query_checksum_ok(struct xdp_md *ctx, struct query *q)
{
	/* SOLUTION: the pseudo-header, then the datagram, with csum_add_xdp_copied (see checksum.h) */
	__u32 sum = q->addr_sum + bpf_htons(IPPROTO_UDP) + bpf_htons(q->udp_len);

	if (!q->checksum)
		return 1;
	return csum_add_xdp_copied(ctx, q->l4_off, q->udp_len, &sum) == 0 &&
	       csum_fold16(sum) == 0xffff;   /* else truncated, or damaged on the way */
	/* STARTER: return 0; */
	/* END SOLUTION */
}

/* Make the frame `new_len` bytes long, keeping its first `keep` bytes (headers and question)
 * where a reply builder expects them. Returns 0, or -1 with the frame unchanged.
 *
 * Growing the tail is the simple way, but a frame may have no room after it: on veth the
 * buffer is the sender's socket buffer, whose spare tail depends on how the allocator rounded
 * its size. Every XDP buffer has XDP_PACKET_HEADROOM (256) bytes in front, though. So if the
 * tail cannot grow, grow the head instead and move the kept bytes to the new start: the room
 * opens up behind them, where the answers go. */
static __always_inline int resize(struct xdp_md *ctx, __u32 new_len, __u32 keep)
{
	int delta = (int)new_len - (int)bpf_xdp_get_buff_len(ctx);
	struct scratch *scratch;
	__u32 grow, zero = 0;

	if (delta < -MAX_CSUM_LEN)
		return -1;
	if (bpf_xdp_adjust_tail(ctx, delta) == 0)
		return 0;
	if (delta <= 0)
		return -1;
	grow = delta;
	if (grow > MAX_GROWTH || bpf_xdp_adjust_head(ctx, -(int)grow)) {
		count_event(NO_ROOM);
		return -1;
	}
	/* Two helper calls move the kept bytes (a loop would be too many branches for the
	 * verifier on top of the checksum loops): copy them out to a scratch buffer, then back
	 * in at the new start. The buffer is a map value: MAX_KEEP bytes on the 512-byte stack
	 * would not fit beside the rest. */
	scratch = moved.lookup(&zero);
	if (!scratch || keep == 0 || keep > MAX_KEEP)
		return -1;
	/* The checks bound some copy of `keep`, maybe not the register passed to the helpers,
	 * which also refuse a size that may be 0. Arithmetic, which clang cannot drop after
	 * barrier_var, bounds that one for the verifier, from 1 to SCRATCH_SIZE; it changes
	 * nothing since 1 <= keep <= MAX_KEEP < SCRATCH_SIZE. A check after barrier_var would
	 * not do for older verifiers (Debian 12's Linux 6.1): they learn nothing from
	 * `keep == 0` being false ("R3 min value is outside of the allowed memory range"). */
	barrier_var(keep);
	keep = ((keep - 1) & (SCRATCH_SIZE - 1)) + 1;
	if (bpf_xdp_load_bytes(ctx, grow, scratch->bytes, keep) ||
	    bpf_xdp_store_bytes(ctx, 0, scratch->bytes, keep))
		return -1;                   /* cannot happen: keep < new_len */
	count_event(MOVED_HEAD);
	return 0;
}

/* Append one answer per address after the question, `rdlen` bytes of address each.
 * Returns the bytes written, or -1 (cannot happen: the tail was grown to fit). */
static __always_inline int put_answers(__u8 *pos, void *end, struct query *q,
				       struct dns_rrset *rrset, __u32 count, __u16 rdlen)
{
	struct dns_answer *answer;
	__u32 i;

	for (i = 0; i < MAX_ADDRS && i < count; i++) {
		/* Without this clang counts the turns down to 0 (`n -= 1; if n != 0`), and older
		 * verifiers (Debian 12's Linux 6.1) learn nothing from `n != 0`: they see no end
		 * to the loop and read past rrset->addrs ("invalid access to map value"). Hidden
		 * from clang, i keeps the two compares the loop is written with. */
		barrier_var(i);
		answer = (struct dns_answer *)(pos + i * (ANSWER_HEAD_LEN + rdlen));
		barrier_var(answer);
		if ((void *)answer + ANSWER_HEAD_LEN + rdlen > end)
			return -1;
		answer->name = bpf_htons(ANSWER_NAME_PTR);
		answer->type = bpf_htons(q->key.qtype);
		answer->class = bpf_htons(DNS_CLASS_IN);
		answer->ttl = bpf_htonl(rrset->ttl);
		answer->rdlength = bpf_htons(rdlen);
		__builtin_memcpy(answer->rdata, rrset->addrs[i], rdlen);
	}
	return i * (ANSWER_HEAD_LEN + rdlen);
}

/* Turn the query into its answer and send it back. Once the tail has moved the frame is no
 * longer the query, so a failed check past that point drops it (none can fail: each only
 * restates for the verifier what the lengths computed before guarantee). */
static __always_inline int answer(struct xdp_md *ctx, struct query *q, struct dns_rrset *rrset)
{
	/* SOLUTION: grow or shrink the frame to the answer's size, then write it */
	__u32 count = rrset->count, name_len = q->name_len, rdlen, dns_len, udp_len, sum;
	void *data, *end;
	struct ethhdr *eth;
	struct udphdr *udp;
	struct dnshdr *dns;
	struct dns_opt *opt;
	__u8 *pos;
	__u16 check;
	__be16 port;
	int written;

	/* Bound again what came from the stack and the map: the verifier tracks registers, not
	 * memory. One check per line, with barrier_var between them, so that clang cannot merge
	 * `count == 0 || count > MAX_ADDRS` into one unsigned compare of `count - 1`, which
	 * would bound a copy and leave `count` itself unbounded for the verifier.
	 * Older verifiers (Debian 12's Linux 6.1) need more: what a check teaches them about a
	 * register does not reach a copy that clang saved on the stack before the check ("R4
	 * offset is outside of the packet" at the answers). A bound made by arithmetic travels
	 * with the value into every copy: so name_len is also masked, which changes nothing
	 * (name_len <= MAX_NAME_LEN <= 255) and which clang cannot drop after barrier_var. */
	if (count > MAX_ADDRS || name_len > MAX_NAME_LEN)
		return XDP_PASS;
	barrier_var(count);
	if (count == 0)
		return XDP_PASS;
	barrier_var(name_len);
	name_len &= 255;
	rdlen = q->key.qtype == DNS_TYPE_A ? 4 : 16;
	dns_len = sizeof(*dns) + name_len + 4 + count * (ANSWER_HEAD_LEN + rdlen) +
		  (q->edns ? sizeof(*opt) : 0);
	/* At most 12 + 128 + 4 + 8 * 28 + 11 = 379 bytes: under the 512 that DNS over UDP
	 * allows without EDNS, so the answer never needs the TC bit. */
	udp_len = sizeof(*udp) + dns_len;
	if (resize(ctx, q->l4_off + udp_len, q->l4_off + sizeof(*udp) + sizeof(*dns) + name_len + 4))
		return XDP_PASS;             /* no room: nothing was changed yet */

	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_DROP;
	swap_macs(eth);
	if (q->l4_off == sizeof(*eth) + sizeof(struct iphdr)) {
		struct iphdr *ip = (void *)(eth + 1);
		__be32 addr;

		if ((void *)(ip + 1) > end)
			return XDP_DROP;
		addr = ip->saddr;
		ip->saddr = ip->daddr;
		ip->daddr = addr;
		ip->ttl = REPLY_TTL;
		ip->tot_len = bpf_htons(sizeof(*ip) + udp_len);
		ip->check = 0;               /* the header is short: sum it again */
		sum = 0;
		if (csum_add_bytes(ip, end, sizeof(*ip), &sum))
			return XDP_DROP;
		ip->check = ~csum_fold16(sum);
		udp = (void *)(ip + 1);
	} else {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		struct in6_addr addr;

		if ((void *)(ip6 + 1) > end)
			return XDP_DROP;
		addr = ip6->saddr;
		ip6->saddr = ip6->daddr;
		ip6->daddr = addr;
		ip6->hop_limit = REPLY_TTL;
		ip6->payload_len = bpf_htons(udp_len);
		udp = (void *)(ip6 + 1);
	}

	dns = (void *)(udp + 1);
	if ((void *)(dns + 1) > end)
		return XDP_DROP;
	port = udp->source;
	udp->source = udp->dest;
	udp->dest = port;
	udp->len = bpf_htons(udp_len);
	udp->check = 0;
	dns->flags = bpf_htons(DNS_QR | DNS_AA | (q->flags & DNS_RD));
	dns->ancount = bpf_htons(count);
	dns->arcount = bpf_htons(q->edns);

	pos = (__u8 *)(dns + 1) + name_len + 4; /* the question stays as it came */
	if (q->key.qtype == DNS_TYPE_A)
		written = put_answers(pos, end, q, rrset, count, 4);
	else
		written = put_answers(pos, end, q, rrset, count, 16);
	if (written < 0)
		return XDP_DROP;
	if (q->edns) {
		opt = (struct dns_opt *)(pos + written);
		barrier_var(opt);
		if ((void *)(opt + 1) > end)
			return XDP_DROP;
		opt->name = 0;
		opt->type = bpf_htons(DNS_TYPE_OPT);
		opt->udp_payload = bpf_htons(EDNS_PAYLOAD);
		opt->ext_rcode = 0;
		opt->version = 0;
		opt->flags = bpf_htons(q->edns_flags & EDNS_DO);
		opt->rdlength = 0;
	}

	/* The UDP checksum covers a pseudo-header (addresses: the same sum in either order,
	 * protocol, length) and the whole datagram. 0 means "none" on the wire: send 0xffff. */
	sum = q->addr_sum + bpf_htons(IPPROTO_UDP) + bpf_htons(udp_len);
	if (csum_add_xdp(ctx, udp, udp_len, &sum))
		return XDP_DROP;
	check = ~csum_fold16(sum);
	udp->check = check ? check : 0xffff;

	count_event(q->key.qtype == DNS_TYPE_A ? ANSWERS_A : ANSWERS_AAAA);
	return XDP_TX;
	/* STARTER: return XDP_PASS; */
	/* END SOLUTION */
}

int xdp_dns(struct xdp_md *ctx)
{
	struct cursor c = cursor_start(ctx);
	struct ethhdr *eth = parse_ethhdr(&c);
	__u32 zero = 0;
	struct server_addrs *me = server.lookup(&zero);
	struct dns_rrset *rrset;
	struct query q;
	int is_v6;

	__builtin_memset(&q, 0, sizeof(q));  /* the whole key is hashed: no stray stack bytes */
	if (!eth || !me || !eth_to_me(eth, me->mac))
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		is_v6 = 0;
	else if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		is_v6 = 1;
	else
		return XDP_PASS;
	if ((is_v6 ? check_ipv6(&c, me, &q) : check_ipv4(&c, me, &q)) < 0)
		return XDP_PASS;
	if (check_query(ctx, &c, &q, is_v6) < 0)
		return XDP_PASS;
	rrset = records.lookup(&q.key);
	if (!rrset)
		return XDP_PASS;             /* not ours to answer: user space says NXDOMAIN, ... */
	if (!query_checksum_ok(ctx, &q))
		return XDP_PASS;             /* damaged: the kernel drops it */
	return answer(ctx, &q, rrset);
}
