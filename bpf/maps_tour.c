/* A tour of BPF maps: each kind used once for what it is for, so that its cost can be measured.
 *
 * Every program here counts the frame it gets in one kind of map and passes it. The key is
 * the frame's IPv4 source address (a hash map's kind of key) or its IP protocol (an array's:
 * a small index). bpflab.maps_tour runs each with BPF_PROG_TEST_RUN, many times on one frame,
 * and reports ns per run above an empty program's: the price of the map, and nothing else.
 *
 * Read with lab 5 (notebook 05-verifier). Not graded.
 */
#include "parsing.h"

#define ENTRIES 1024
#define RING_PAGES 512 /* 2 MiB: room for every event of a timed run, so none is dropped */

BPF_ARRAY(by_proto, __u64, 256);              /* shared by all CPUs: counts need atomics */
BPF_PERCPU_ARRAY(by_proto_percpu, __u64, 256); /* one copy per CPU: a plain += is safe */
BPF_HASH(by_source, __u32, __u64, ENTRIES);   /* any key, found by hashing */
BPF_PERCPU_HASH(by_source_percpu, __u32, __u64, ENTRIES);
BPF_TABLE("lru_hash", __u32, __u64, recent_sources, ENTRIES); /* a cache: full, it forgets the oldest */
BPF_PROG_ARRAY(next_stage, 1);                 /* programs to jump to: tail calls */
BPF_RINGBUF_OUTPUT(events, RING_PAGES);        /* records to user space, in order, all CPUs */

struct event {
	__u32 source;
	__u32 len;
};

/* The frame's IPv4 source and protocol; 0 and 0 if it is not IPv4. */
static __always_inline void frame_keys(struct xdp_md *ctx, __u32 *source, __u32 *protocol)
{
	struct cursor c = cursor_start(ctx);
	struct ethhdr *eth = parse_ethhdr(&c);
	struct iphdr *ip;

	*source = 0;
	*protocol = 0;
	if (!eth || eth->h_proto != bpf_htons(ETH_P_IP))
		return;
	ip = parse_iphdr(&c);
	if (!ip)
		return;
	*source = ip->saddr;
	*protocol = ip->protocol;
}

/* The baseline: the same parsing, no map at all. */
int tour_parse_only(struct xdp_md *ctx)
{
	__u32 source, protocol;

	frame_keys(ctx, &source, &protocol);
	return source == 1 && protocol == 1 ? XDP_DROP : XDP_PASS; /* keeps the parsing from being optimised away */
}

int tour_array(struct xdp_md *ctx)
{
	__u32 source, protocol;
	__u64 *count;

	frame_keys(ctx, &source, &protocol);
	count = by_proto.lookup(&protocol);
	if (count)
		__sync_fetch_and_add(count, 1);
	return XDP_PASS;
}

static __always_inline int count_percpu(struct xdp_md *ctx)
{
	__u32 source, protocol;
	__u64 *count;

	frame_keys(ctx, &source, &protocol);
	count = by_proto_percpu.lookup(&protocol);
	if (count)
		*count += 1;
	return XDP_PASS;
}

int tour_percpu_array(struct xdp_md *ctx)
{
	return count_percpu(ctx);
}

int tour_hash(struct xdp_md *ctx)
{
	__u32 source, protocol;
	__u64 *count, one = 1;

	frame_keys(ctx, &source, &protocol);
	count = by_source.lookup(&source);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		by_source.update(&source, &one);
	return XDP_PASS;
}

int tour_percpu_hash(struct xdp_md *ctx)
{
	__u32 source, protocol;
	__u64 *count, one = 1;

	frame_keys(ctx, &source, &protocol);
	count = by_source_percpu.lookup(&source);
	if (count)
		*count += 1;
	else
		by_source_percpu.update(&source, &one);
	return XDP_PASS;
}

int tour_lru_hash(struct xdp_md *ctx)
{
	__u32 source, protocol;
	__u64 *count, one = 1;

	frame_keys(ctx, &source, &protocol);
	count = recent_sources.lookup(&source);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		recent_sources.update(&source, &one);
	return XDP_PASS;
}

/* The second stage of a pipeline, reached by a tail call: it counts like tour_percpu_array. */
int tour_next_stage(struct xdp_md *ctx)
{
	return count_percpu(ctx);
}

int tour_tail_call(struct xdp_md *ctx)
{
	next_stage.call(ctx, 0); /* never returns if slot 0 holds a program */
	return XDP_ABORTED;       /* the slot was empty */
}

int tour_ringbuf(struct xdp_md *ctx)
{
	struct event event = {.len = ctx->data_end - ctx->data};
	__u32 protocol;

	frame_keys(ctx, &event.source, &protocol);
	events.ringbuf_output(&event, sizeof(event), 0);
	return XDP_PASS;
}

/* What printing from the fast path costs: one line to the trace buffer per frame. */
int tour_printk(struct xdp_md *ctx)
{
	__u32 source, protocol;

	frame_keys(ctx, &source, &protocol);
	bpf_trace_printk("tour: protocol %u from %x\n", protocol, source);
	return XDP_PASS;
}
