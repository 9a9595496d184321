/* dns_query_generator.c: the in-kernel load generator (not a lab), run by test-run's
 * live-frames mode on the client's veth: every run sends one DNS query out with XDP_TX.
 *
 * Live-frames mode recycles its pages and restores only their pointers, not their bytes, and the
 * fast path on the other end rewrites each query into its answer in that very page. So the
 * program writes the query (QUERY_LEN bytes, from the `query` map) into the frame every time.
 */
#include <uapi/linux/bpf.h>

struct query_template {
	__u8 bytes[QUERY_LEN];
};
BPF_ARRAY(query, struct query_template, 1);

int dns_query_generator(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct query_template *template;
	__u32 zero = 0;

	template = query.lookup(&zero);
	if (!template || data + QUERY_LEN > end)
		return XDP_DROP;
	__builtin_memcpy(data, template->bytes, QUERY_LEN);
	return XDP_TX;
}
