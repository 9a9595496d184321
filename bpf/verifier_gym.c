/* Lab 5, verifier: a gym of nine small XDP programs, each refused for one common reason.
 *
 * Every exercise is a program of its own (its own entry function) that the kernel's verifier,
 * the compiler or the course's checks refuse as it stands. Load it, read what the feedback
 * says, fix the program, and keep what it does: each fix is graded by running real frames
 * through it, so a fix that deletes the code does not pass.
 *
 * Each exercise sits between two `=====` lines and is compiled and verified on its own: one
 * that does not compile yet does not hold back the others.
 */
#include "parsing.h"

/* ===== Exercise 1: bounds ============================================================== */
/* Drop UDP datagrams to the discard port (9), over IPv4; pass everything else. */
#define DISCARD_PORT 9

int gym_bounds(struct xdp_md *ctx)
{
	struct cursor c = cursor_start(ctx);
	struct ethhdr *eth = parse_ethhdr(&c);
	struct iphdr *ip;
	struct udphdr *udp;

	if (!eth || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	ip = parse_iphdr(&c);
	if (!ip || ip->protocol != IPPROTO_UDP)
		return XDP_PASS;
	/* SOLUTION: read the UDP header only where the verifier knows all of it is there */
	udp = parse_udphdr(&c);
	if (!udp)
		return XDP_PASS;
	/* STARTER: udp = c.pos; */
	/* END SOLUTION */
	return udp->dest == bpf_htons(DISCARD_PORT) ? XDP_DROP : XDP_PASS;
}

/* ===== Exercise 2: null ================================================================ */
/* Count the frames of each EtherType (host byte order) in `ethertypes`; pass them all. */
BPF_HASH(ethertypes, __u32, __u64, 64);

int gym_null(struct xdp_md *ctx)
{
	struct cursor c = cursor_start(ctx);
	struct ethhdr *eth = parse_ethhdr(&c);
	__u64 *count, one = 1;
	__u32 type;

	if (!eth)
		return XDP_PASS;
	type = bpf_ntohs(eth->h_proto);
	count = ethertypes.lookup(&type);
	/* SOLUTION: an EtherType seen for the first time has no entry yet */
	if (!count) {
		ethertypes.update(&type, &one);
		return XDP_PASS;
	}
	/* END SOLUTION */
	__sync_fetch_and_add(count, 1); /* a hash map is shared by all CPUs: add atomically */
	return XDP_PASS;
}

/* ===== Exercise 3: loop ================================================================ */
/* Add up the bytes of an IPv4 UDP datagram's payload, the first MAX_SUM_BYTES at most, and keep
 * the sum in `payload_sum`; pass every frame. */
#define MAX_SUM_BYTES 64
BPF_ARRAY(payload_sum, __u32, 1);

int gym_loop(struct xdp_md *ctx)
{
	struct cursor c = cursor_start(ctx);
	struct ethhdr *eth = parse_ethhdr(&c);
	struct iphdr *ip;
	struct udphdr *udp;
	__u32 key = 0, sum = 0, len, i;
	__u32 *result;
	__u8 *payload;

	if (!eth || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	ip = parse_iphdr(&c);
	if (!ip || ip->protocol != IPPROTO_UDP)
		return XDP_PASS;
	udp = parse_udphdr(&c);
	if (!udp || bpf_ntohs(udp->len) < sizeof(*udp))
		return XDP_PASS;
	len = bpf_ntohs(udp->len) - sizeof(*udp);
	payload = c.pos;
	/* SOLUTION: a loop the verifier can see the end of: a constant bound, then break */
	for (i = 0; i < MAX_SUM_BYTES; i++) {
		barrier_var(i); /* keeps clang from rewriting the two bounds into one it counts down */
		if (i >= len || (void *)(payload + i + 1) > c.end)
			break;
		sum += payload[i];
	}
	/* STARTER: for (i = 0; i < len; i++) { */
	/* STARTER: 	if ((void *)(payload + i + 1) > c.end) */
	/* STARTER: 		break; */
	/* STARTER: 	sum += payload[i]; */
	/* STARTER: } */
	/* END SOLUTION */
	result = payload_sum.lookup(&key);
	if (result)
		*result = sum;
	return XDP_PASS;
}

/* ===== Exercise 4: stack =============================================================== */
/* Keep the first SNAP_LEN bytes (at most) of the last frame, and its length, in `last_frame`;
 * pass every frame. */
#define SNAP_LEN 600

struct snapshot {
	__u32 len;
	__u8 bytes[SNAP_LEN];
};
BPF_ARRAY(last_frame, struct snapshot, 1);

int gym_stack(struct xdp_md *ctx)
{
	/* 64 bits, like the register the helper gets: a 32-bit length is checked on a
	 * zero-extended copy, and the register itself stays unbounded for the verifier. */
	__u64 len = ctx->data_end - ctx->data;
	__u32 key = 0;

	if (len > SNAP_LEN)
		len = SNAP_LEN;
	barrier_var(len); /* the bound just set, on the register that goes to the helper */
	/* Every frame holds an Ethernet header: this proves the helper's len >= 1. Written as one
	 * check on its own (not `len == 0 || len > SNAP_LEN`, which clang folds into one test of
	 * a copy of len, a link between registers only Linux 6.10 and later follow). */
	if (len < ETH_HLEN)
		return XDP_PASS;
	/* SOLUTION: copy straight into the map's value: the stack holds 512 bytes in all */
	struct snapshot *snap = last_frame.lookup(&key);

	if (!snap)
		return XDP_PASS;
	snap->len = len;
	bpf_xdp_load_bytes(ctx, 0, snap->bytes, len);
	/* STARTER: struct snapshot snap = {}; */
	/* STARTER:  */
	/* STARTER: snap.len = len; */
	/* STARTER: bpf_xdp_load_bytes(ctx, 0, snap.bytes, len); */
	/* STARTER: last_frame.update(&key, &snap); */
	/* END SOLUTION */
	return XDP_PASS;
}

/* ===== Exercise 5: uninit ============================================================== */
/* Count IPv4 frames at index 0 of `families` and IPv6 frames at index 1; pass every frame. */
BPF_PERCPU_ARRAY(families, __u64, 2);

int gym_uninit(struct xdp_md *ctx)
{
	struct cursor c = cursor_start(ctx);
	struct ethhdr *eth = parse_ethhdr(&c);
	__u64 *count;
	/* SOLUTION: every path to the lookup must set the key */
	__u32 key = 0;
	/* STARTER: __u32 key; */
	/* END SOLUTION */

	if (!eth || (eth->h_proto != bpf_htons(ETH_P_IP) && eth->h_proto != bpf_htons(ETH_P_IPV6)))
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6))
		key = 1;
	count = families.lookup(&key);
	if (count)
		*count += 1; /* per-CPU: this CPU's copy is ours alone */
	return XDP_PASS;
}

/* ===== Exercise 6: offset ============================================================== */
/* Drop IPv4 UDP datagrams whose last payload byte is POISON; pass everything else, datagrams
 * whose length field lies about the frame too. */
#define POISON 0xff
#define MAX_UDP_LEN 1480 /* a datagram in a 1500-byte IPv4 packet */

int gym_offset(struct xdp_md *ctx)
{
	struct cursor c = cursor_start(ctx);
	struct ethhdr *eth = parse_ethhdr(&c);
	struct iphdr *ip;
	struct udphdr *udp;
	__u32 ulen;
	__u8 *last;

	if (!eth || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	ip = parse_iphdr(&c);
	if (!ip || ip->protocol != IPPROTO_UDP)
		return XDP_PASS;
	udp = parse_udphdr(&c);
	if (!udp)
		return XDP_PASS;
	ulen = bpf_ntohs(udp->len);
	/* SOLUTION: a bound on the offset first, then the data_end check counts */
	if (ulen > MAX_UDP_LEN)
		return XDP_PASS;
	barrier_var(ulen); /* the value just bounded: clang may otherwise merge the two checks */
	/* END SOLUTION */
	if (ulen <= sizeof(*udp))
		return XDP_PASS;
	last = (__u8 *)udp + ulen - 1;
	if ((void *)(last + 1) > c.end)
		return XDP_PASS;
	return *last == POISON ? XDP_DROP : XDP_PASS;
}

/* ===== Exercise 7: helper ============================================================== */
/* Drop frames of EtherType 0x88B5 (IEEE's "local experimental"); pass everything else. */
#define ETH_P_EXPERIMENTAL 0x88B5

int gym_helper(struct xdp_md *ctx)
{
	__be16 type;

	/* SOLUTION: read the EtherType with what XDP offers */
	if (bpf_xdp_load_bytes(ctx, offsetof(struct ethhdr, h_proto), &type, sizeof(type)))
		return XDP_PASS;
	/* STARTER: if (bpf_skb_load_bytes(ctx, offsetof(struct ethhdr, h_proto), &type, sizeof(type))) */
	/* STARTER: 	return XDP_PASS; */
	/* END SOLUTION */
	return type == bpf_htons(ETH_P_EXPERIMENTAL) ? XDP_DROP : XDP_PASS;
}

/* ===== Exercise 8: verdict ============================================================= */
/* A ping blocker: drop ICMPv4 echo requests; pass everything else. */
int gym_verdict(struct xdp_md *ctx)
{
	struct cursor c = cursor_start(ctx);
	struct ethhdr *eth = parse_ethhdr(&c);
	struct iphdr *ip;
	struct icmphdr *icmp;

	if (!eth || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	ip = parse_iphdr(&c);
	if (!ip || ip->protocol != IPPROTO_ICMP)
		return XDP_PASS;
	icmp = parse_icmphdr(&c);
	if (icmp && icmp->type == ICMP_ECHO)
		return XDP_DROP;
	/* SOLUTION: the verdict that lets the kernel have the frame */
	return XDP_PASS;
	/* STARTER: return 7; */
	/* END SOLUTION */
}

/* ===== Exercise 9: signature =========================================================== */
/* Drop a frame when the SIG_BYTES bytes after its Ethernet header match SIGNATURE: byte k is
 * above SIG_THRESHOLD exactly when bit k of SIGNATURE is set. Pass everything else. */
#define SIG_BYTES 24
#define SIG_THRESHOLD 7
#define SIGNATURE 0xabcdef

int gym_signature(struct xdp_md *ctx)
{
	struct cursor c = cursor_start(ctx);
	struct ethhdr *eth = parse_ethhdr(&c);
	__u8 *p = c.pos;
	__u32 k;

	if (!eth || (void *)(p + SIG_BYTES) > c.end)
		return XDP_PASS;
	/* SOLUTION: decide byte by byte, and leave as soon as one byte disagrees */
#pragma unroll
	for (k = 0; k < SIG_BYTES; k++)
		if ((p[k] > SIG_THRESHOLD) != ((SIGNATURE >> k) & 1))
			return XDP_PASS;
	return XDP_DROP;
	/* STARTER: __u32 mask = 0; */
	/* STARTER:  */
	/* STARTER: #pragma unroll */
	/* STARTER: for (k = 0; k < SIG_BYTES; k++) */
	/* STARTER: 	if (p[k] > SIG_THRESHOLD) */
	/* STARTER: 		mask |= 1 << k; */
	/* STARTER: return mask == SIGNATURE ? XDP_DROP : XDP_PASS; */
	/* END SOLUTION */
}
