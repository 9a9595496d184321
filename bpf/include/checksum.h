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
 */
#ifndef BPFLAB_CHECKSUM_H
#define BPFLAB_CHECKSUM_H

#include <uapi/linux/bpf.h>
#include "parsing.h" /* barrier_var */

/* The longest stretch summed: a 1500-byte MTU holds at most 750 words. A named bound lets
 * the verifier see that the loop ends. */
#define MAX_CSUM_WORDS 750

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

/* Add `len` bytes starting at `start` to `*sum`. Returns -1, leaving `*sum` alone, if the
 * bytes run past `end` or `len` is over the bound; 0 on success. */
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
		word = (__u16 *)start + i;
		barrier_var(word);
		if ((void *)(word + 1) > end) /* checked right before each read */
			return -1;
		acc += *word;
	}
	if (len & 1) { /* an odd last byte counts as the high byte of a word padded with 0 */
		/* A no-op (words <= MAX_CSUM_WORDS < 1024) that bounds it again: clang may reload
		 * `len` from the stack, and older verifiers (Debian 12's Linux 6.1) do not know the
		 * bound of that copy, so they refuse the read ("invalid access to packet"). */
		words &= 1023;
		last = (__u8 *)start + 2 * words;
		barrier_var(last);
		if ((void *)(last + 1) > end)
			return -1;
		acc += bpf_htons((__u16)*last << 8);
	}
	*sum = acc;
	return 0;
}

#endif /* BPFLAB_CHECKSUM_H */
