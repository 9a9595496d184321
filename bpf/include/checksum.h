/* checksum.h: the Internet checksum (RFC 1071) and its incremental update (RFC 1624).
 *
 * The checksum of IPv4 headers, ICMP, ICMPv6, UDP and TCP is the one's-complement of the
 * one's-complement sum of 16-bit words. A packet is intact when the sum of all its words,
 * checksum included, folds to 0xffff. Changing one 16-bit word from m to m' changes the
 * checksum HC to HC' = ~(~HC + ~m + m') (RFC 1624, eqn. 3), so a reply does not need the
 * whole packet summed again.
 *
 * Words are added as the CPU loads them; since one's-complement addition is the same in
 * either byte order, the result is right in network order without any swapping.
 * (These helpers are not called csum_fold/csum_add: the kernel's headers use those names.)
 *
 * Two ways to sum bytes, for two kinds of stretch:
 * - csum_add_bytes() sums a header or a pseudo-header's addresses: a constant, even length, at
 *   most 2 * MAX_CSUM_WORDS bytes, one bounds check for all of it, the words added unrolled.
 * - csum_add_xdp() and csum_add_skb() sum a whole message of any length up to MAX_CSUM_LEN
 *   (an ICMP message, a UDP datagram), CSUM_CHUNK bytes at a time; csum_add_xdp_copied() too,
 *   more slowly, for programs near the verifier's limits (see below).
 *
 * Why not one loop over the words of a whole message? The verifier proves such a loop once per
 * length the message may have, and how cheaply depends on the shape clang gives the loop. Each
 * `word + 1 > end` check it passes teaches it that the packet is that long; a path where the
 * packet was proven 1000 bytes long is no proof for one where it was proven 998, so it can
 * reuse a finished path only if the shorter lengths were explored first. Debian 12's clang 14
 * happened to lay the loop out that way; Debian 13's clang 19 lays it out the other way round
 * (and counts the turns down to a `!= 0` test), and the same source was rejected: "The
 * sequence of 8193 jumps is too complex". Chunks keep the turns few, whatever the loop's
 * shape: at most 23 whole chunks, each read straight from the packet after one bounds check,
 * then the last partial chunk, which a helper copies out: it checks its bounds at run time, so
 * the verifier has one case to prove there, not one per length. (bpf_xdp_load_bytes needs
 * Linux 5.18; Debian 12 has 6.1.)
 *
 * What it costs (measured by test-run on the bench's machine): a 64-byte chunk read in place,
 * a few ns; a helper call that copies one, 20 to 30 ns. So the rest is copied, the chunks are
 * not, except by csum_add_xdp_copied(): copies teach the verifier nothing about the packet's
 * length, so whatever follows the sum is proven once instead of once per number of chunks.
 */
#ifndef BPFLAB_CHECKSUM_H
#define BPFLAB_CHECKSUM_H

#include <uapi/linux/bpf.h>
#include "parsing.h" /* barrier_var */

/* The longest stretch csum_add_bytes() reads from the packet, in 16-bit words: a 20-byte IPv4
 * header, the 32 bytes of two IPv6 addresses. Its loop's named bound, which clang unrolls. */
#define MAX_CSUM_WORDS 32
/* The longest message summed: a 1500-byte MTU. */
#define MAX_CSUM_LEN 1500
/* Bytes copied out of the packet per helper call (a power of two), and the calls needed. */
#define CSUM_CHUNK 64
#define MAX_CSUM_CHUNKS (MAX_CSUM_LEN / CSUM_CHUNK) /* 23 whole chunks, then at most 28 bytes */

/* Fold a 32-bit sum of 16-bit words into 16 bits, end-around carry included. */
static __always_inline __u16 csum_fold16(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* RFC 1624 eqn. 3: the checksum after one 16-bit word changes from `old` to `new`. */
static __always_inline __u16 csum_replace16(__u16 check, __u16 old, __u16 new)
{
	__u32 sum = (__u16)~check + (__u16)~old + (__u32)new;

	return ~csum_fold16(sum);
}

/* Add the `len` bytes at `start`, read straight from the packet, to `*sum`. `len` must be a
 * constant (`sizeof(*ip)`) and even: the loop is then unrolled into len / 2 additions, with one
 * bounds check for all of them. Returns -1, leaving `*sum` alone, if the bytes run past `end`;
 * 0 on success. */
static __always_inline int csum_add_bytes(const void *start, const void *end, __u32 len, __u32 *sum)
{
	const __u16 *word = start;
	__u32 acc = *sum, i;

	if (len > 2 * MAX_CSUM_WORDS || (const __u8 *)start + len > (const __u8 *)end)
		return -1;
#pragma unroll
	for (i = 0; i < MAX_CSUM_WORDS; i++) {
		if (i == len / 2)
			break;
		acc += word[i];
	}
	*sum = acc;
	return 0;
}

/* The sum of one chunk's words. The bytes past what was copied in are 0: exactly RFC 1071's
 * padding of an odd last byte. */
static __always_inline __u32 csum_chunk(const __u16 *chunk)
{
	__u32 acc = 0, k;

#pragma unroll
	for (k = 0; k < CSUM_CHUNK / 2; k++)
		acc += chunk[k];
	return acc;
}

/* Copy `n` bytes from packet offset `off` into `to` with the hook's helper (`xdp`: a constant
 * after inlining, so only one of the two calls is left in the program). */
static __always_inline long csum_copy(void *ctx, int xdp, __u32 off, void *to, __u32 n)
{
	return xdp ? bpf_xdp_load_bytes(ctx, off, to, n) : bpf_skb_load_bytes(ctx, off, to, n);
}

/* Add the last `len` bytes of a message, fewer than CSUM_CHUNK, from packet offset `off` to
 * `*acc`, copied out by the hook's helper: it checks its bounds at run time, so the verifier
 * has one case to prove, not one per length. -1 if they run past the packet. */
static __always_inline int csum_add_rest(void *ctx, int xdp, __u32 off, __u32 len, __u32 *acc)
{
	__u16 rest[CSUM_CHUNK / 2];

	if (!len)
		return 0;
	/* A no-op (1 <= len < CSUM_CHUNK) that bounds the size by arithmetic, which reaches
	 * whatever copy of len clang passes: the helper must not write past `rest`. */
	len = ((len - 1) & (CSUM_CHUNK - 1)) + 1;
	__builtin_memset(rest, 0, sizeof(rest)); /* what is not copied over: RFC 1071's padding */
	if (csum_copy(ctx, xdp, off, rest, len))
		return -1;
	*acc += csum_chunk(rest);
	return 0;
}

/* Add the `len` bytes from packet offset `off` to `*sum`, every chunk copied out. Returns -1,
 * leaving `*sum` alone, if they run past the packet or `len` is over MAX_CSUM_LEN; 0 on
 * success. (750 words of at most 0xffff each cannot overflow the sum.) */
static __always_inline int csum_add_copied(void *ctx, int xdp, __u32 off, __u32 len, __u32 *sum)
{
	__u16 chunk[CSUM_CHUNK / 2];
	__u32 acc = *sum, i;

	if (len > MAX_CSUM_LEN)
		return -1;
	for (i = 0; i < MAX_CSUM_CHUNKS; i++) {
		barrier_var(len);
		if (len < CSUM_CHUNK)
			break;
		if (csum_copy(ctx, xdp, off, chunk, CSUM_CHUNK))
			return -1;
		acc += csum_chunk(chunk);
		off += CSUM_CHUNK;
		len -= CSUM_CHUNK;
	}
	if (csum_add_rest(ctx, xdp, off, len, &acc)) /* under CSUM_CHUNK: 23 chunks reach 1472 */
		return -1;
	*sum = acc;
	return 0;
}

/* Add the `len` bytes at `start` (a pointer into the packet, which ends at `end`) to `*sum`: the
 * whole chunks read in place, after one bounds check each, the rest copied out. Same returns
 * as csum_add_copied. Reading in place saves a helper call per chunk; the price is paid in
 * the verifier: each chunk's check teaches it that the packet is that long, so it proves
 * what follows once per number of chunks. */
static __always_inline int csum_add_in_place(void *ctx, int xdp, void *data, void *end, void *start,
					     __u32 len, __u32 *sum)
{
	__u8 *chunk = start;
	__u32 acc = *sum, i;

	if (len > MAX_CSUM_LEN)
		return -1;
	for (i = 0; i < MAX_CSUM_CHUNKS; i++) {
		barrier_var(len);
		if (len < CSUM_CHUNK)
			break;
		if ((void *)(chunk + CSUM_CHUNK) > end) /* checked right before the reads */
			return -1;
		acc += csum_chunk((__u16 *)chunk);
		chunk += CSUM_CHUNK;
		len -= CSUM_CHUNK;
	}
	if (csum_add_rest(ctx, xdp, (void *)chunk - data, len, &acc))
		return -1;
	*sum = acc;
	return 0;
}

/* XDP: add the `len` bytes at `start` (a pointer into the packet) to `*sum`; -1 if they run
 * past the packet. Any length up to MAX_CSUM_LEN, however the verifier got there. */
static __always_inline int csum_add_xdp(struct xdp_md *ctx, void *start, __u32 len, __u32 *sum)
{
	return csum_add_in_place(ctx, 1, (void *)(long)ctx->data, (void *)(long)ctx->data_end, start,
				 len, sum);
}

/* The same for the `len` bytes from packet offset `off`, every chunk copied out: for a program
 * that does much after the sum, or sums twice, where proving the rest once per number of
 * chunks would be too much for the verifier (xdp_dns.c: "program too large"). */
static __always_inline int csum_add_xdp_copied(struct xdp_md *ctx, __u32 off, __u32 len, __u32 *sum)
{
	return csum_add_copied(ctx, 1, off, len, sum);
}

/* TC: csum_add_xdp for a socket buffer. Only its linear part is read in place: pull the message
 * into it first (bpf_skb_pull_data), or its chunks past the linear part fail the check. */
static __always_inline int csum_add_skb(struct __sk_buff *skb, void *start, __u32 len, __u32 *sum)
{
	return csum_add_in_place(skb, 0, (void *)(long)skb->data, (void *)(long)skb->data_end, start,
				 len, sum);
}

#endif /* BPFLAB_CHECKSUM_H */
