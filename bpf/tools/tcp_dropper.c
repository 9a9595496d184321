/* tcp_dropper.c: lose some TCP data on purpose, so that the sender retransmits.
 *
 * Attached at XDP on the client's veth, it drops every DROP_EVERY-th segment that carries
 * data, at most DROP_LIMIT of them, and passes everything else. The lab's checks use it to
 * make retransmissions whose number the kernel (`ss`) and the students' programs must agree
 * on: there is no netem on every course machine, and a loss this regular is reproducible.
 */
#include "parsing.h"
#include "tcp.h"

#ifndef DROP_EVERY
#define DROP_EVERY 40
#endif
#ifndef DROP_LIMIT
#define DROP_LIMIT 8
#endif

enum { DATA_SEEN, DATA_DROPPED, DROPPER_COUNTS };
BPF_ARRAY(dropper, __u64, DROPPER_COUNTS); /* one CPU at a time on a veth's receive path */

int tcp_dropper(struct xdp_md *ctx)
{
	struct cursor c = cursor_start(ctx);
	struct iphdr *ip;
	struct tcphdr *tcp = parse_tcp_segment(&c, &ip);
	__u32 seen_key = DATA_SEEN, dropped_key = DATA_DROPPED;
	__u64 *seen, *dropped;

	if (!tcp || !tcp_payload_len(ip, tcp))
		return XDP_PASS;
	seen = dropper.lookup(&seen_key);
	dropped = dropper.lookup(&dropped_key);
	if (!seen || !dropped)
		return XDP_PASS;
	*seen += 1;
	if (*seen % DROP_EVERY || *dropped >= DROP_LIMIT)
		return XDP_PASS;
	*dropped += 1;
	return XDP_DROP;
}
