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
 * - csum_add_bytes() reads a short stretch straight from the packet (a header, the addresses
 *   of a pseudo-header): a bounds check before each word, at most MAX_CSUM_WORDS of them.
 * - csum_add_xdp() and csum_add_skb() sum a whole message of any length up to MAX_CSUM_LEN
 *   (an ICMP message, a UDP datagram): a helper copies it out CSUM_CHUNK bytes at a time.
 *
 * Why not one loop over the words of a whole message? The verifier proves such a loop once per
 * length the message may have, and how cheaply depends on the shape clang gives the loop. Each
 * `word + 1 > end` check it passes teaches it that the packet is that long; a path where the
 * packet was proven 1000 bytes long is no proof for one where it was proven 998, so it can
 * reuse a finished path only if the shorter lengths were explored first. Debian 12's clang 14
 * happened to lay the loop out that way; Debian 13's clang 19 lays it out the other way round
 * (and counts the turns down to a `!= 0` test), and the same source was rejected: "The
 * sequence of 8193 jumps is too complex". A helper checks its bounds at run time, so what the
 * verifier knows afterwards does not depend on the length, whatever the loop's shape: at most
 * 23 turns and a last partial chunk, each proven once. (bpf_xdp_load_bytes needs Linux 5.18;
 * Debian 12 has 6.1.)
 */
#ifndef BPFLAB_CHECKSUM_H
#define BPFLAB_CHECKSUM_H

#include <uapi/linux/bpf.h>
#include "parsing.h" /* barrier_var */

/* The longest stretch csum_add_bytes() reads from the packet: a 20-byte IPv4 header, the 32
 * bytes of two IPv6 addresses. A named bound lets the verifier see that the loop ends. */
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

/* Add the `len` bytes at `start`, read straight from the packet, to `*sum`: for short
 * stretches, at most 2 * MAX_CSUM_WORDS bytes. Returns -1, leaving `*sum` alone, if the bytes
 * run past `end` or `len` is over the bound; 0 on success. */
static __always_inline int csum_add_bytes(void *start, void *end, __u32 len, __u32 *sum)
{
	__u32 words, acc = *sum, i;
	__u16 *word;
	__u8 *last;

	if (len > 2 * MAX_CSUM_WORDS)
		return -1;
	barrier_var(len); /* use the value just checked: clang may otherwise reuse an unchecked copy */
	words = len / 2;
	for (i = 0; i < MAX_CSUM_WORDS && i < words; i++) {
		/* Hidden from clang, i keeps the two compares the loop is written with: clang
		 * could otherwise count the turns down to a `!= 0` test, from which older
		 * verifiers (Linux 6.1) learn nothing, so they see no end to the loop. */
		barrier_var(i);
		word = (__u16 *)start + i;
		barrier_var(word);
		if ((void *)(word + 1) > end) /* checked right before each read */
			return -1;
		acc += *word;
	}
	if (len & 1) { /* an odd last byte counts as the high byte of a word padded with 0 */
		/* A no-op (words <= MAX_CSUM_WORDS) that bounds the offset by arithmetic, which
		 * reaches whatever copy of `words` clang reads here. */
		words &= 2 * MAX_CSUM_WORDS - 1;
		last = (__u8 *)start + 2 * words;
		barrier_var(last);
		if ((void *)(last + 1) > end)
			return -1;
		acc += bpf_htons((__u16)*last << 8);
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

/* Add the `len` bytes from packet offset `off` to `*sum`, copied out a chunk at a time.
 * Returns -1, leaving `*sum` alone, if they run past the packet or `len` is over
 * MAX_CSUM_LEN; 0 on success. (750 words of at most 0xffff each cannot overflow the sum.) */
static __always_inline int csum_add_copied(void *ctx, int xdp, __u32 off, __u32 len, __u32 *sum)
{
	__u16 chunk[CSUM_CHUNK / 2];
	__u32 acc = *sum, i;

	if (len > MAX_CSUM_LEN)
		return -1;
	for (i = 0; i < MAX_CSUM_CHUNKS; i++) {       /* the whole chunks */
		barrier_var(len);
		if (len < CSUM_CHUNK)
			break;
		if (csum_copy(ctx, xdp, off, chunk, CSUM_CHUNK))
			return -1;
		acc += csum_chunk(chunk);
		off += CSUM_CHUNK;
		len -= CSUM_CHUNK;
	}
	if (len) {  /* the rest: under CSUM_CHUNK bytes, since 23 chunks reach 1472 of 1500 */
		/* A no-op (1 <= len < CSUM_CHUNK) that bounds the size by arithmetic, which
		 * reaches whatever copy of len clang passes: the helper must not write past
		 * `chunk`. */
		len = ((len - 1) & (CSUM_CHUNK - 1)) + 1;
		__builtin_memset(chunk, 0, sizeof(chunk));
		if (csum_copy(ctx, xdp, off, chunk, len))
			return -1;
		acc += csum_chunk(chunk);
	}
	*sum = acc;
	return 0;
}

/* XDP: add the `len` bytes at `start` (a pointer into the packet) to `*sum`; -1 if they run
 * past the packet. Any length up to MAX_CSUM_LEN, however the verifier got there. */
static __always_inline int csum_add_xdp(struct xdp_md *ctx, void *start, __u32 len, __u32 *sum)
{
	return csum_add_copied(ctx, 1, start - (void *)(long)ctx->data, len, sum);
}

/* TC: the same for a socket buffer. */
static __always_inline int csum_add_skb(struct __sk_buff *skb, void *start, __u32 len, __u32 *sum)
{
	return csum_add_copied(skb, 0, start - (void *)(long)skb->data, len, sum);
}

#endif /* BPFLAB_CHECKSUM_H */
