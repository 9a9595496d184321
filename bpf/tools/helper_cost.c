/* helper_cost.c: what one TC helper call costs (not a lab), for bpflab.tools.bench.
 *
 * Writes the frame's own MAC addresses back over themselves with bpf_skb_store_bytes(), CALLS
 * times (set when compiling), so that the frame stays the same and test-run can repeat it.
 * The bench times CALLS=0 and CALLS=4: the difference, divided by 4, is one call.
 */
#include <uapi/linux/pkt_cls.h>
#include "parsing.h"

int helper_cost(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u8 macs[2 * ETH_ALEN];
	int i;

	if (data + sizeof(macs) > end)
		return TC_ACT_OK;
	__builtin_memcpy(macs, data, sizeof(macs));
#pragma unroll
	for (i = 0; i < CALLS; i++)
		if (bpf_skb_store_bytes(skb, 0, macs, sizeof(macs), 0))
			return TC_ACT_SHOT;
	return TC_ACT_OK;
}
