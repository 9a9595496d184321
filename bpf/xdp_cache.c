/* Lab xdp-cache: BMC in miniature, a memcached cache at XDP in front of a real memcached.
 *
 * Three programs, one per step of the handout, sharing this file's maps (labs/xdp-cache):
 *
 *   xdp_cache            XDP       Step 1, the hit path: a one-key UDP GET whose key the cache
 *                                  holds (filled in the current epoch) is answered here with the
 *                                  reply memcached sent for it, under the request's id: XDP_TX.
 *                                  Anything else passes; a miss notes who asked for which key.
 *   tc_cache_fill        TC egress Step 2, the fill: memcached's reply to a GET that missed fills
 *                                  the cache, if it is whole and no write came since the miss.
 *   tc_cache_invalidate  TC ingress Step 3, the invalidation: anything for memcached but one GET
 *                                  or stats line may change a value, so it starts a new epoch:
 *                                  every entry is stale before memcached reads the command
 *                                  (BMC's rule: no client reads a value older than its last SET).
 *
 * Why an epoch for the whole cache rather than the written key's entry: over TCP a segment is
 * not a command. `set k 0 0 5\r\nhello\r\n` may be what it looks like, or the data of a
 * `set a 0 0 30` whose first segment came just before on the same connection; only following
 * each connection's byte stream would tell. One counter is right for every byte stream, and the race between a fill and
 * a write is closed by comparing two numbers. The price is hit rate under writes: every write
 * empties the cache (the notebook measures it).
 */
#include "parsing.h"
#include "checksum.h"
#include "server.h"

#define MC_PORT        11211
#define MAX_KEY_LEN    250   /* memcached's own limit */
#define MAX_REPLY_LEN  1400  /* "VALUE <key> <flags> <bytes>\r\n<data>\r\nEND\r\n": fits a 1500-byte MTU */
#define MAX_ENTRIES    1024
#define FRAME_LEN      8     /* memcached's UDP frame header */
#define HEADERS_LEN    (14 + 20 + 8) /* Ethernet, IPv4 without options, UDP */

struct mc_frame {
	__be16 request_id;
	__be16 sequence;
	__be16 total;
	__be16 reserved;
};

#define KEY_BYTES 256 /* a power of two above MAX_KEY_LEN: an index masked with KEY_BYTES - 1 stays inside */
struct cache_key {
	__u8 bytes[KEY_BYTES]; /* the key, zeros after it (a hash key is all its bytes) */
};

struct cache_entry {
	__u32 len;                  /* bytes of `reply` */
	__u32 epoch;                /* the invalidation epoch it was filled in */
	__u32 text_sum;             /* the sum of the reply's 16-bit words, for the UDP checksum */
	__u8 reply[MAX_REPLY_LEN];  /* memcached's reply text, from VALUE to END\r\n */
};

BPF_ARRAY(server, struct server_addrs, 1);
/* LRU: when the cache is full, a fill pushes out the entry least recently used, as a cache should */
BPF_TABLE("lru_hash", struct cache_key, struct cache_entry, cache, MAX_ENTRIES);
/* The fill's scratch: an entry is too big for the stack. */
BPF_PERCPU_ARRAY(scratch, struct cache_entry, 2); /* 0: the fill's, 1: the invalidation's */
/* A GET that missed, by who asked (client address and port, request id): its key, and the
 * epoch it missed in. memcached's reply to it fills the cache only in that same epoch (else a
 * SET came since, and the reply may carry an older value). Knowing the key, the fill need not
 * parse it: it checks that the reply names it. */
struct asker {
	__be32 client_ip;
	__be16 client_port;
	__be16 request_id;
};
struct pending_get {
	__u32 epoch;
	__u32 key_len;
	struct cache_key key;
};
/* LRU too: a GET whose reply never comes (memcached dropped it, or it was not memcached's to
 * answer) must not keep its slot for ever, or the map fills up and nothing is cached again. */
BPF_TABLE("lru_hash", struct asker, struct pending_get, pending, MAX_ENTRIES);
/* Bumped by every command that may change a value (tc_cache_invalidate): an entry counts only
 * in the epoch it was filled in, and a reply fills only if its GET missed in the current one. */
BPF_ARRAY(epoch, __u32, 1);

enum { HITS, MISSES, FILLS, FILLS_REFUSED, INVALIDATIONS, CACHE_EVENTS };
BPF_PERCPU_ARRAY(events, __u64, CACHE_EVENTS);

static __always_inline void count_event(__u32 kind)
{
	__u64 *count = events.lookup(&kind);

	if (count)
		*count += 1;
}

static __always_inline __u32 current_epoch(void)
{
	__u32 zero = 0, *now = epoch.lookup(&zero);

	return now ? *now : 0;
}

/* Read a key (bytes above ' ', at most MAX_KEY_LEN) at `pos` into `key`; returns its length
 * (0: none), and the byte after it in *stop. */
static __always_inline __u32 read_key(__u8 *pos, void *end, struct cache_key *key, __u8 *stop)
{
	__u32 i;

	for (i = 0; i < MAX_KEY_LEN + 1; i++) {
		__u8 *c;

		barrier_var(i);
		c = pos + i;

		if ((void *)(c + 1) > end)
			return 0;
		if (*c <= ' ' || *c == 0x7f) {
			*stop = *c;
			return i;
		}
		if (i < MAX_KEY_LEN)
			key->bytes[i] = *c;
	}
	return 0; /* too long */
}

int xdp_cache(struct xdp_md *ctx)
{
	struct cursor c = cursor_start(ctx);
	struct ethhdr *eth = parse_ethhdr(&c);
	struct iphdr *ip;
	struct udphdr *udp;
	struct mc_frame *frame;
	__u8 *body, stop = 0;
	struct pending_get get = {}; /* the key, and what a miss records */
	struct cache_entry *entry;
	__u32 key_len, zero = 0, sum = 0;
	__u64 len; /* 64 bits: a 32-bit copy's bounds get lost in the shifts clang adds */
	struct server_addrs *me = server.lookup(&zero);
	int delta;

	if (!eth || !me || eth->h_proto != bpf_htons(ETH_P_IP) || !eth_to_me(eth, me->mac))
		return XDP_PASS;
	ip = parse_iphdr(&c);
	if (!ip || ip->ihl != 5 || ip->protocol != IPPROTO_UDP || ip->daddr != me->ipv4 ||
	    (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)) || !ipv4_source_ok(ip->saddr))
		return XDP_PASS;
	udp = parse_udphdr(&c);
	if (!udp || udp->dest != bpf_htons(MC_PORT) || !udp->source)
		return XDP_PASS;
	frame = c.pos;
	if ((void *)(frame + 1) > c.end)
		return XDP_PASS;
	if (frame->sequence || frame->total != bpf_htons(1) || frame->reserved)
		return XDP_PASS;
	body = (void *)(frame + 1);
	if ((void *)(body + 4) > c.end || body[0] != 'g' || body[1] != 'e' || body[2] != 't' || body[3] != ' ')
		return XDP_PASS;
	key_len = read_key(body + 4, c.end, &get.key, &stop);
	if (!key_len || key_len > MAX_KEY_LEN || stop != '\r')
		return XDP_PASS;
	/* the request must end right after "\r\n", and the UDP length must say so */
	{
		__u8 *tail = body + 4 + key_len;

		if ((void *)(tail + 2) > c.end) /* the verifier learns from this one, not from != */
			return XDP_PASS;
		if (tail[1] != '\n')
			return XDP_PASS;
		if ((void *)(tail + 2) != c.end) /* nothing after the line */
			return XDP_PASS;
		if (bpf_ntohs(udp->len) != sizeof(*udp) + FRAME_LEN + 4 + key_len + 2 ||
		    bpf_ntohs(ip->tot_len) != sizeof(*ip) + bpf_ntohs(udp->len))
			return XDP_PASS;
	}
	/* SOLUTION: look the key up; a miss records who asked and passes; a hit, if the request's sums are right, becomes memcached's reply: XDP_TX */
	/* STARTER: return XDP_PASS; */
	entry = cache.lookup(&get.key);
	if (!entry || entry->epoch != current_epoch()) {
		struct asker asker = {.client_ip = ip->saddr, .client_port = udp->source,
				      .request_id = frame->request_id};

		get.epoch = current_epoch();
		get.key_len = key_len;
		pending.update(&asker, &get);
		count_event(MISSES);
		return XDP_PASS;
	}
	/* A hit: is the request intact, as the kernel would check it? Checked only now, so that a
	 * miss never pays for the sums. A damaged request goes to the kernel, which drops it. */
	if (csum_add_bytes(ip, c.end, sizeof(*ip), &sum) || csum_fold16(sum) != 0xffff)
		return XDP_PASS;
	if (udp->check) { /* 0: the client sent none (IPv4 allows it) */
		__u32 udp_len = bpf_ntohs(udp->len);

		sum = (ip->saddr & 0xffff) + (ip->saddr >> 16) + (ip->daddr & 0xffff) + (ip->daddr >> 16) +
		      bpf_htons(IPPROTO_UDP) + udp->len;
		if (csum_add_xdp_copied(ctx, 14 + sizeof(*ip), udp_len, &sum) || csum_fold16(sum) != 0xffff)
			return XDP_PASS;
	}
	sum = 0;
	len = entry->len;
	if (len < 5 || len > MAX_REPLY_LEN)
		return XDP_PASS;
	/* Room for the reply's text: at the tail if the frame has some there, else at the head,
	 * the headers moved forward (veth's frames often have no tailroom). Nothing is changed yet
	 * when both fail: the request then goes to memcached. */
	delta = (int)len - (int)(4 + key_len + 2); /* the reply's text for the request's "get <key>\r\n" */
	if (bpf_xdp_adjust_tail(ctx, delta)) {
		__u8 headers[HEADERS_LEN + FRAME_LEN];

		if (bpf_xdp_adjust_head(ctx, -delta))
			return XDP_PASS;
		if (bpf_xdp_load_bytes(ctx, delta, headers, sizeof(headers)) ||
		    bpf_xdp_store_bytes(ctx, 0, headers, sizeof(headers)))
			return XDP_DROP;
	}
	barrier_var(len); /* each bound on its own: clang would fold both into one subtraction */
	if (len > MAX_REPLY_LEN)
		return XDP_DROP;
	barrier_var(len); /* and the lower bound */
	if (len < 5)
		return XDP_DROP;
	if (bpf_xdp_store_bytes(ctx, HEADERS_LEN + FRAME_LEN, entry->reply, len))
		return XDP_DROP;
	/* the headers: found again (the resize moved them), swapped, lengths and checksums anew */
	c = cursor_start(ctx); /* the resize moved the frame: parse it again */
	eth = parse_ethhdr(&c);
	if (!eth)
		return XDP_DROP;
	ip = c.pos;
	if ((void *)(ip + 1) > c.end)
		return XDP_DROP;
	udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > c.end)
		return XDP_DROP;
	swap_macs(eth);
	{
		__be32 client = ip->saddr;
		__be16 client_port = udp->source;

		ip->saddr = ip->daddr;
		ip->daddr = client;
		udp->source = udp->dest;
		udp->dest = client_port;
	}
	ip->tot_len = bpf_htons(sizeof(*ip) + sizeof(*udp) + FRAME_LEN + len);
	ip->ttl = REPLY_TTL;
	ip->check = 0;
	if (csum_add_bytes(ip, c.end, sizeof(*ip), &sum))
		return XDP_DROP;
	ip->check = ~csum_fold16(sum);
	udp->len = bpf_htons(sizeof(*udp) + FRAME_LEN + len);
	frame = (void *)(udp + 1);
	if ((void *)(frame + 1) > c.end)
		return XDP_DROP;
	/* The UDP checksum without reading the text again: the pseudo-header, the UDP and frame
	 * headers' words, then the text's own sum, which the fill computed once (the text starts at
	 * an even offset of the datagram, so its words are the datagram's words). */
	sum = (ip->saddr & 0xffff) + (ip->saddr >> 16) + (ip->daddr & 0xffff) + (ip->daddr >> 16) +
	      bpf_htons(IPPROTO_UDP) + udp->len + udp->source + udp->dest + udp->len +
	      frame->request_id + frame->sequence + frame->total + frame->reserved + entry->text_sum;
	udp->check = ~csum_fold16(sum) ?: 0xffff;
	count_event(HITS);
	return XDP_TX;
	/* END SOLUTION */
}

#define MAX_DIGITS 10 /* a number of the VALUE line: flags, bytes */

/* The text copied out of a reply, byte `i` (0 past the copy): reads of a map value, no packet. */
static __always_inline __u8 at(struct cache_entry *entry, __u32 i)
{
	barrier_var(i); /* one register, checked and then used: clang would check a copy */
	if (i >= MAX_REPLY_LEN)
		return 0;
	return entry->reply[i];
}

/* A decimal number in the copy from `*i`, at most MAX_DIGITS digits, followed by `stop`;
 * -1 if there is none. Moves *i past the stop byte. */
static __always_inline long copied_number(struct cache_entry *entry, __u32 *i, __u8 stop)
{
	long n = 0;
	__u32 k;

	for (k = 0; k < MAX_DIGITS; k++) {
		__u8 d = at(entry, *i + k);

		if (d == stop && k > 0) {
			*i += k + 1;
			return n;
		}
		if (d < '0' || d > '9')
			return -1;
		n = n * 10 + (d - '0');
	}
	return -1;
}

/* The sum of the text's 16-bit words, as a checksum adds them (a last odd byte padded with a
 * zero), for the first `len` bytes of the entry's reply: computed once, when the cache is
 * filled, so that a hit adds one number instead of summing the text again. */
static __always_inline __u32 text_sum(struct cache_entry *entry, __u64 len)
{
	__u32 sum = 0, k;

	for (k = 0; k < MAX_REPLY_LEN / 2; k++) {
		__u32 at_byte = 2 * k;

		if (at_byte >= len)
			break;
		if (at_byte + 1 < len) {
			sum += *(__u16 *)&entry->reply[at_byte];
		} else {
			__u8 last[2] = {entry->reply[at_byte], 0}; /* the same on either byte order */

			sum += *(__u16 *)last;
		}
	}
	return sum;
}

/* TC egress of the server: memcached's reply to a one-key GET fills the cache, if it is whole
 * ("VALUE <key> <flags> <bytes>\r\n<data>\r\nEND\r\n", nothing else), fits, and no SET of the
 * key was seen since the GET missed. The reply's text is copied out first and parsed there. */
int tc_cache_fill(struct __sk_buff *skb)
{
	struct cursor c = cursor_start_skb(skb);
	struct ethhdr *eth = parse_ethhdr(&c);
	struct iphdr *ip;
	struct udphdr *udp;
	struct mc_frame *frame;
	struct pending_get *get;
	struct asker asker;
	struct cache_entry *entry;
	__u32 zero = 0, i, k, key_len;
	__u64 len;
	long bytes;

	if (!eth || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	ip = parse_iphdr(&c);
	if (!ip || ip->ihl != 5 || ip->protocol != IPPROTO_UDP || (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
		return TC_ACT_OK;
	udp = parse_udphdr(&c);
	if (!udp || udp->source != bpf_htons(MC_PORT))
		return TC_ACT_OK;
	frame = c.pos;
	if ((void *)(frame + 1) > c.end || frame->sequence || frame->total != bpf_htons(1))
		return TC_ACT_OK;
	/* SOLUTION: find the GET that missed (pending); copy the reply out; if it is whole, names the key and no write came since, it fills the cache */
	/* STARTER: return TC_ACT_OK; */
	asker.client_ip = ip->daddr;
	asker.client_port = udp->dest;
	asker.request_id = frame->request_id;
	get = pending.lookup(&asker);
	if (!get)
		return TC_ACT_OK; /* not the answer to a GET that missed at XDP */
	len = bpf_ntohs(udp->len); /* header, frame header, reply text */
	if (len < sizeof(*udp) + FRAME_LEN + 5 || len > sizeof(*udp) + FRAME_LEN + MAX_REPLY_LEN)
		return TC_ACT_OK;
	len -= sizeof(*udp) + FRAME_LEN;
	entry = scratch.lookup(&zero);
	if (!entry)
		return TC_ACT_OK;
	barrier_var(len); /* each bound on its own, as in the hit path */
	if (len > MAX_REPLY_LEN)
		return TC_ACT_OK;
	barrier_var(len); /* and the lower bound */
	if (len < 5)
		return TC_ACT_OK;
	if (bpf_skb_load_bytes(skb, HEADERS_LEN + FRAME_LEN, entry->reply, len))
		return TC_ACT_OK;
	if (at(entry, 0) != 'V' || at(entry, 1) != 'A' || at(entry, 2) != 'L' || at(entry, 3) != 'U' ||
	    at(entry, 4) != 'E' || at(entry, 5) != ' ')
		return TC_ACT_OK;
	key_len = get->key_len;
	if (key_len < 1 || key_len > MAX_KEY_LEN)
		return TC_ACT_OK;
	for (k = 0; k < MAX_KEY_LEN; k++) { /* the reply names the key that was asked for */
		barrier_var(k);
		if (k >= key_len)
			break;
		if (at(entry, 6 + k) != get->key.bytes[k & (KEY_BYTES - 1)])
			return TC_ACT_OK;
	}
	i = 6 + key_len;
	if (at(entry, i) != ' ')
		return TC_ACT_OK;
	i += 1;
	if (copied_number(entry, &i, ' ') < 0) /* the flags */
		return TC_ACT_OK;
	bytes = copied_number(entry, &i, '\r');
	if (bytes < 0 || at(entry, i) != '\n')
		return TC_ACT_OK;
	if (len != i + 1 + bytes + 7) /* data, then "\r\nEND\r\n", nothing else: one key, whole */
		return TC_ACT_OK;
	/* the race BMC must close: a SET seen after this GET missed may make this reply stale */
	if (get->epoch != current_epoch()) {
		pending.delete(&asker);
		count_event(FILLS_REFUSED);
		return TC_ACT_OK;
	}
	entry->len = len;
	entry->epoch = current_epoch();
	entry->text_sum = text_sum(entry, len);
	cache.update(&get->key, entry);
	pending.delete(&asker);
	count_event(FILLS);
	return TC_ACT_OK;
	/* END SOLUTION */
}

/* TC ingress of the server: anything for memcached but one GET (or stats) line may change a value
 * (set, delete, incr, ..., a value's continuation, several commands at once): a new epoch makes
 * every cached entry stale before memcached even reads the command. */
#define MAX_LINE 300
#define MAX_LINE_MASK 511 /* a power of two, less one, above MAX_LINE */
int tc_cache_invalidate(struct __sk_buff *skb)
{
	struct cursor c = cursor_start_skb(skb);
	struct ethhdr *eth = parse_ethhdr(&c);
	struct iphdr *ip;
	struct cache_entry *copy;
	__u32 zero = 0, one = 1, off, i, *now;
	__u64 len, size;
	__u16 dport;

	if (!eth || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	ip = parse_iphdr(&c);
	if (!ip || ip->ihl != 5)
		return TC_ACT_OK;
	if (ip->protocol == IPPROTO_UDP) {
		struct udphdr *udp = parse_udphdr(&c);

		if (!udp)
			return TC_ACT_OK;
		dport = udp->dest;
		off = HEADERS_LEN + FRAME_LEN;
	} else if (ip->protocol == IPPROTO_TCP) {
		struct tcphdr *tcp = c.pos;

		if ((void *)(tcp + 1) > c.end)
			return TC_ACT_OK;
		dport = tcp->dest;
		off = 14 + 20 + tcp->doff * 4;
	} else {
		return TC_ACT_OK;
	}
	if (dport != bpf_htons(MC_PORT))
		return TC_ACT_OK;
	/* SOLUTION: unless the payload is one GET or stats line (nothing after it), start a new epoch */
	/* STARTER: return TC_ACT_OK; */
	len = bpf_ntohs(ip->tot_len);
	if (len + 14 <= off)
		return TC_ACT_OK; /* no payload: an ACK */
	len = len + 14 - off;
	copy = scratch.lookup(&one);
	if (!copy)
		return TC_ACT_OK;
	if (len <= MAX_LINE) {
		if (len < 1 || len > MAX_LINE)
			goto flush;
		/* The same number, in a form whose lower bound Linux 6.1's verifier can see: it learns
		 * nothing from `len != 0` ("invalid access to map value ... size=0" at the call). */
		size = ((len - 1) & (MAX_LINE_MASK)) + 1;
		if (bpf_skb_load_bytes(skb, off, copy->reply, size))
			goto flush;
		for (i = 0; i < MAX_LINE; i++) { /* where the first line ends */
			if (i + 1 >= len || copy->reply[i] == '\r')
				break;
		}
		/* one line and nothing after it, a read: "get <key>", "gets <key>", or "stats..." (a
		 * monitor's question must not empty the cache) */
		if (i + 2 == len && copy->reply[(i + 1) & 511] == '\n' &&
		    ((copy->reply[0] == 'g' && copy->reply[1] == 'e' && copy->reply[2] == 't' &&
		      (copy->reply[3] == ' ' || (copy->reply[3] == 's' && copy->reply[4] == ' '))) ||
		     (copy->reply[0] == 's' && copy->reply[1] == 't' && copy->reply[2] == 'a' &&
		      copy->reply[3] == 't' && copy->reply[4] == 's')))
			return TC_ACT_OK;
	}
flush:
	now = epoch.lookup(&zero); /* the one counter every entry is checked against */
	if (now)
		__sync_fetch_and_add(now, 1);
	count_event(INVALIDATIONS);
	return TC_ACT_OK;
	/* END SOLUTION */
}
