/* Lab tcp-state: which TCP state each hook can see, and how state reaches XDP.
 *
 * The seed report asked whether the kernel's TCP state can reach the XDP hook at all. This
 * file answers in five small programs, one per step of the handout, each at its own hook:
 *
 *   xdp_tcp_seen    XDP       looks up the socket an arriving segment belongs to and counts
 *                             segments by that socket's state (struct bpf_sock: state only);
 *   tc_tcp_flows    TC        the same lookup, then bpf_tcp_sock(): the congestion window,
 *                             RTT and retransmissions of the connection, per flow;
 *   sockops_flows   sock_ops  the kernel calls it on state changes, RTT samples and
 *                             retransmissions of the lab server's sockets (its cgroup's);
 *                             it writes what it learns into the map `flow_states`;
 *   xdp_flow_gate   XDP       reads `flow_states` for every arriving segment: state passed
 *                             down to XDP through a map, the report's exact question;
 *   xdp_syn_shield  XDP       answers a SYN to a listener itself, with a SYN cookie made from
 *                             the listener's own secret: a SYN flood never reaches its queue.
 *
 * IPv4 only; every other packet, and every malformed segment, passes to the kernel untouched.
 * The programs share this file's maps: `flow_states` is written at one hook and read at another.
 */
#include "parsing.h"
#include "checksum.h"
#include "server.h"
#include "tcp.h"

#define MAX_FLOWS 1024 /* connections a per-flow map holds */

/* ===== Step 1: what XDP can see of a connection ===== */

/* Segments seen, by the state of the socket they belong to (slot 0: no socket at all). */
BPF_PERCPU_ARRAY(seen, __u64, STATE_SLOTS);

static __always_inline void count_seen(__u32 state)
{
	__u64 *count = seen.lookup(&state);

	if (count)
		*count += 1;
}

int xdp_tcp_seen(struct xdp_md *ctx)
{
	struct cursor c = cursor_start(ctx);
	struct iphdr *ip;
	struct tcphdr *tcp = parse_tcp_segment(&c, &ip);

	if (!tcp)
		return XDP_PASS;
	/* SOLUTION: look the socket up (bpf_skc_lookup_tcp), count its state, release it */
	struct bpf_sock_tuple tuple = tuple_of_segment(ip, tcp);
	/* skc_: any socket, request and time-wait minisockets included (bpf_sk_lookup_tcp finds
	 * full sockets only: a listener for the handshake's ACK, nothing in TIME_WAIT). */
	struct bpf_sock *sk = bpf_skc_lookup_tcp(ctx, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
	__u32 state = NO_SOCKET;

	if (sk) {
		state = sk->state;
		bpf_sk_release(sk); /* the lookup took a reference: the verifier insists it is given back */
	}
	count_seen(state);
	/* END SOLUTION */
	return XDP_PASS;
}

/* ===== Step 2: what TC can see ===== */

/* What struct bpf_tcp_sock says of a connection, as the last segment from the client found it. */
struct tcp_view {
	__u32 state;
	__u32 snd_cwnd;      /* congestion window, in segments */
	__u32 srtt_us;       /* smoothed RTT, in microseconds (the kernel keeps it times 8) */
	__u32 total_retrans; /* segments retransmitted over the connection's life */
	__u32 rcv_nxt;       /* the next sequence number expected from the client */
	__u32 snd_una;       /* the oldest byte sent and not yet acknowledged */
	__u64 bytes_acked;   /* bytes the client acknowledged */
};
BPF_HASH(tc_flows, struct flow, struct tcp_view, MAX_FLOWS);

int tc_tcp_flows(struct __sk_buff *skb)
{
	struct cursor c = cursor_start_skb(skb);
	struct iphdr *ip;
	struct tcphdr *tcp = parse_tcp_segment(&c, &ip);

	if (!tcp)
		return TC_ACT_OK;
	/* SOLUTION: look the socket up, then bpf_tcp_sock(); record its figures per flow */
	struct bpf_sock_tuple tuple = tuple_of_segment(ip, tcp);
	struct flow key = flow_of_segment(ip, tcp);
	struct bpf_sock *sk = bpf_skc_lookup_tcp(skb, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
	struct bpf_tcp_sock *tp;
	struct tcp_view view = {};

	if (!sk)
		return TC_ACT_OK;
	tp = bpf_tcp_sock(sk); /* NULL for a listener's request or a time-wait minisocket */
	if (tp) {
		view.state = sk->state;
		view.snd_cwnd = tp->snd_cwnd;
		view.srtt_us = tp->srtt_us >> 3;
		view.total_retrans = tp->total_retrans;
		view.rcv_nxt = tp->rcv_nxt;
		view.snd_una = tp->snd_una;
		view.bytes_acked = tp->bytes_acked;
		tc_flows.update(&key, &view);
	}
	bpf_sk_release(sk); /* after the last read of tp: it lives as long as the reference */
	/* END SOLUTION */
	return TC_ACT_OK;
}

/* ===== Step 3: passing state down to XDP through a map ===== */

/* What the sock_ops program last learnt of a connection of the server's. */
struct flow_state {
	__u32 state;       /* BPF_TCP_*: ESTABLISHED, then FIN_WAIT1, CLOSE_WAIT, ..., CLOSE */
	__u32 srtt_us;     /* smoothed RTT at the last callback, microseconds */
	__u32 snd_cwnd;    /* congestion window at the last callback, segments */
	__u32 retransmits; /* segments retransmitted, counted by the retransmission callback */
};
BPF_HASH(flow_states, struct flow, struct flow_state, MAX_FLOWS);

/* Record the socket's state and figures; `state` is the state it is in or moving to. */
static __always_inline void record_state(struct bpf_sock_ops *skops, __u32 state, __u32 retransmitted)
{
	/* One variable per context field, each hidden from the optimiser: clang 19 merges two
	 * neighbouring 32-bit reads (remote_ip4, local_ip4) into one 64-bit read, which the
	 * verifier refuses ("invalid bpf_context access off=24 size=8"); clang 14 does not. */
	__u32 client_ip = skops->remote_ip4, server_ip = skops->local_ip4;
	struct flow key = {};
	struct flow_state fresh = {}, *known;

	barrier_var(client_ip);
	barrier_var(server_ip);
	key.client_ip = client_ip;
	key.server_ip = server_ip;
	key.client_port = bpf_ntohl(skops->remote_port); /* network order, in the top half */
	key.server_port = skops->local_port;              /* already host order */
	known = flow_states.lookup(&key);

	if (!known) {
		flow_states.update(&key, &fresh);
		known = flow_states.lookup(&key);
		if (!known)
			return; /* the map is full */
	}
	known->state = state;
	known->srtt_us = skops->srtt_us >> 3;
	known->snd_cwnd = skops->snd_cwnd;
	known->retransmits += retransmitted;
}

int sockops_flows(struct bpf_sock_ops *skops)
{
	__u32 op = skops->op;

	if (skops->family != AF_INET)
		return 1;
	/* SOLUTION: ask for the state, RTT and retransmission callbacks; record each */
	if (op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB) {
		/* A connection the server accepted: from now on, call us for these events too. */
		bpf_sock_ops_cb_flags_set(skops, BPF_SOCK_OPS_STATE_CB_FLAG | BPF_SOCK_OPS_RTT_CB_FLAG |
						 BPF_SOCK_OPS_RETRANS_CB_FLAG);
		record_state(skops, BPF_TCP_ESTABLISHED, 0);
	} else if (op == BPF_SOCK_OPS_STATE_CB) {
		record_state(skops, skops->args[1], 0); /* args: old state, new state */
	} else if (op == BPF_SOCK_OPS_RTT_CB) {
		record_state(skops, skops->state, 0);
	} else if (op == BPF_SOCK_OPS_RETRANS_CB && skops->args[2] == 0) {
		/* args: first sequence number, segments, error. total_retrans is raised only after
		 * this callback returns, so the program counts them itself. */
		record_state(skops, skops->state, skops->args[1]);
	}
	/* END SOLUTION */
	return 1;
}

/* Payload bytes of arriving segments, by the state `flow_states` gives their connection
 * (slot 0: a connection the sock_ops program has not seen). */
BPF_PERCPU_ARRAY(bytes_by_state, __u64, STATE_SLOTS);

int xdp_flow_gate(struct xdp_md *ctx)
{
	struct cursor c = cursor_start(ctx);
	struct iphdr *ip;
	struct tcphdr *tcp = parse_tcp_segment(&c, &ip);

	if (!tcp)
		return XDP_PASS;
	/* SOLUTION: find the flow's state in flow_states; add the payload's bytes to its slot */
	struct flow key = flow_of_segment(ip, tcp);
	struct flow_state *known = flow_states.lookup(&key);
	__u32 slot = known ? known->state : NO_SOCKET;
	__u64 *bytes = bytes_by_state.lookup(&slot);

	if (bytes)
		*bytes += tcp_payload_len(ip, tcp);
	/* END SOLUTION */
	return XDP_PASS;
}

/* ===== Step 4: a stateless shield for a stateful protocol ===== */

/* The server's own addresses, at key 0, filled by the loader (bpflab.tcp_state.load_parts). */
BPF_ARRAY(server, struct server_addrs, 1);

/* What the shield did: SYNs it answered, handshake ACKs whose cookie held, the others dropped. */
enum { SYNS_ANSWERED, COOKIES_VALID, COOKIES_FORGED, SHIELD_EVENTS };
BPF_PERCPU_ARRAY(shield, __u64, SHIELD_EVENTS);

#define SYNACK_WINDOW 65535 /* the window the SYN-ACK offers (no scaling: the cookie has no room) */
#define TCP_FLAGS_SYN_ACK 0x12
#define TCPOPT_MSS 2

static __always_inline void count_shield(__u32 event)
{
	__u64 *count = shield.lookup(&event);

	if (count)
		*count += 1;
}

/* The TCP checksum of a header kept in `segment` (zero beyond `len`), with the pseudo-header. */
static __always_inline __u16 tcp_header_checksum(const __u16 *segment, __u32 len, __be32 saddr, __be32 daddr)
{
	__u32 sum = (saddr & 0xffff) + (saddr >> 16) + (daddr & 0xffff) + (daddr >> 16) +
		    bpf_htons(IPPROTO_TCP) + bpf_htons(len);
	int i;

#pragma unroll
	for (i = 0; i < TCP_MAX_HLEN / 2; i++) /* the zeros past `len` add nothing */
		sum += segment[i];
	return ~csum_fold16(sum);
}

/* An intact IPv4 header (no options) from a source the kernel would answer. */
static __always_inline int ipv4_header_ok(struct iphdr *ip, void *end)
{
	__u32 sum = 0;

	if (ip->ihl != 5 || !ipv4_source_ok(ip->saddr) || ip->saddr == ip->daddr)
		return 0;
	if (csum_add_bytes(ip, end, sizeof(*ip), &sum))
		return 0;
	return csum_fold16(sum) == 0xffff;
}

int xdp_syn_shield(struct xdp_md *ctx)
{
	struct cursor c = cursor_start(ctx);
	struct ethhdr *eth = c.pos; /* checked by parse_tcp_segment, checked again before the swap */
	struct iphdr *ip;
	struct tcphdr *tcp = parse_tcp_segment(&c, &ip);
	__u8 header[TCP_MAX_HLEN] = {}; /* the TCP header, copied out: zeros after its end */
	struct tcphdr *th = (struct tcphdr *)header;
	__u32 th_len, tcp_off, zero = 0;
	struct server_addrs *me = server.lookup(&zero);

	if (!tcp || tcp->rst || tcp->fin || !me)
		return XDP_PASS;
	if (!eth_to_me(eth, me->mac)) /* another host's frame: the kernel drops it; do not answer it */
		return XDP_PASS;
	th_len = tcp->doff * 4;
	if (th_len < TCP_MIN_HLEN || th_len > TCP_MAX_HLEN) /* the verifier needs both bounds */
		return XDP_PASS;
	/* SOLUTION: a SYN to a listener gets a SYN-ACK with a cookie; a handshake ACK's cookie is checked */
	struct bpf_sock_tuple tuple = tuple_of_segment(ip, tcp);
	struct bpf_sock *sk;
	__s64 cookie;

	if (!ipv4_header_ok(ip, c.end))
		return XDP_PASS;
	sk = bpf_skc_lookup_tcp(ctx, &tuple, sizeof(tuple.ipv4), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return XDP_PASS;
	if (sk->state != BPF_TCP_LISTEN) { /* a connection of its own: not the shield's business */
		bpf_sk_release(sk);
		return XDP_PASS;
	}
	if (tcp->ack && !tcp->syn) {
		/* An ACK to the listener itself: the handshake's last ACK, if the client answered our
		 * SYN-ACK, whose acknowledgement number is then the cookie plus one. 0: valid, the
		 * kernel makes the connection from it. -ENOENT: no cookie of this listener's (forged,
		 * stale, or none sent lately): drop it here. -EINVAL (cookies off): the kernel's. */
		long valid = bpf_tcp_check_syncookie(sk, ip, sizeof(*ip), tcp, sizeof(*tcp));

		bpf_sk_release(sk);
		if (valid == -ENOENT) {
			count_shield(COOKIES_FORGED);
			return XDP_DROP;
		}
		if (valid == 0)
			count_shield(COOKIES_VALID);
		return XDP_PASS;
	}
	/* tot_len - 20, not 20 + th_len: comparing a sum made a copy of th_len whose bounds
	 * Linux 6.12's verifier then forgot ("R4 invalid zero-sized read" at bpf_xdp_load_bytes). */
	if (!tcp->syn || tcp->ack || bpf_ntohs(ip->tot_len) - sizeof(*ip) != th_len) {
		bpf_sk_release(sk); /* a SYN with data, or anything odd: the kernel's */
		return XDP_PASS;
	}
	tcp_off = (void *)tcp - (void *)(long)ctx->data;
	if (bpf_xdp_load_bytes(ctx, tcp_off, header, th_len)) {
		bpf_sk_release(sk);
		return XDP_PASS;
	}
	if (tcp_header_checksum((__u16 *)header, th_len, ip->saddr, ip->daddr) != 0) {
		bpf_sk_release(sk); /* a damaged SYN: the kernel drops it, so do not answer it */
		return XDP_PASS;
	}
	/* The cookie: sequence number, MSS and time, signed with the listener's secret. Low 32
	 * bits: our sequence number; high 32: the MSS it encodes. On Linux 6.1 to 6.18 it needs
	 * net.ipv4.tcp_syncookies = 2 in the server's namespace; otherwise it fails, and the SYN
	 * goes to the kernel, which answers it itself. */
	cookie = bpf_tcp_gen_syncookie(sk, ip, sizeof(*ip), th, th_len);
	bpf_sk_release(sk);
	if (cookie < 0)
		return XDP_PASS;

	/* The SYN becomes our SYN-ACK in place: same length, addresses and ports swapped. */
	if ((void *)(eth + 1) > c.end)
		return XDP_PASS;
	swap_macs(eth);
	{
		__be32 client = ip->saddr;
		__u16 client_port = th->source;
		__u32 their_seq = bpf_ntohl(th->seq);
		__u32 sum = 0;
		int i;

		ip->saddr = ip->daddr;
		ip->daddr = client;
		ip->ttl = REPLY_TTL;
		ip->check = 0;
		if (csum_add_bytes(ip, c.end, sizeof(*ip), &sum))
			return XDP_DROP; /* cannot happen: checked above; the verifier wants it said */
		ip->check = ~csum_fold16(sum);

		th->source = th->dest;
		th->dest = client_port;
		th->ack_seq = bpf_htonl(their_seq + 1);
		th->seq = bpf_htonl((__u32)cookie);
		header[13] = TCP_FLAGS_SYN_ACK; /* the flags byte: SYN and ACK, nothing else */
		th->window = bpf_htons(SYNACK_WINDOW);
		th->check = 0;
		th->urg_ptr = 0;
		/* Options: only the MSS the cookie encodes, then zeros (end of options). */
#pragma unroll
		for (i = TCP_MIN_HLEN; i < TCP_MAX_HLEN; i++)
			header[i] = 0;
		if (th_len >= TCP_MIN_HLEN + 4) {
			header[20] = TCPOPT_MSS;
			header[21] = 4;
			header[22] = (cookie >> 40) & 0xff;
			header[23] = (cookie >> 32) & 0xff;
		}
		th->check = tcp_header_checksum((__u16 *)header, th_len, ip->saddr, ip->daddr);
	}
	if (bpf_xdp_store_bytes(ctx, tcp_off, header, th_len))
		return XDP_DROP;
	count_shield(SYNS_ANSWERED);
	return XDP_TX;
	/* END SOLUTION */
	return XDP_PASS;
}
