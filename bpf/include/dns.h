/* dns.h: the DNS wire format (RFC 1035), as far as the XDP fast path needs it, and the layout
 * of the record maps it shares with user space (bpflab/dns_records.py packs the same bytes).
 *
 * A DNS message over UDP: a 12-byte header, then the question (a name, a type, a class), then
 * resource records (answers, authority, additional). A name is a list of labels, each a length
 * byte (1..63) and that many bytes, ended by a zero byte: "www.Lab.example." is
 * 3 w w w 3 L a b 7 e x a m p l e 0. A length byte with its top two bits set is a compression
 * pointer to an earlier name; questions do not need them, and the fast path refuses them.
 */
#ifndef BPFLAB_DNS_H
#define BPFLAB_DNS_H

#include <uapi/linux/bpf.h>

#define DNS_PORT        53
#define DNS_TYPE_A      1
#define DNS_TYPE_AAAA   28
#define DNS_TYPE_OPT    41    /* the EDNS0 pseudo-record (RFC 6891) */
#define DNS_CLASS_IN    1

/* Header flags, in host order. */
#define DNS_QR          0x8000 /* 1 in a response */
#define DNS_OPCODE      0x7800 /* 0 for a standard query */
#define DNS_AA          0x0400 /* authoritative answer */
#define DNS_TC          0x0200 /* truncated */
#define DNS_RD          0x0100 /* recursion desired: copied into the response */
#define DNS_RA          0x0080 /* recursion available: never, we are authoritative only */
#define DNS_CD          0x0010 /* checking disabled: DNSSEC only; not copied, as NSD does */
#define EDNS_DO         0x8000 /* "DNSSEC OK" in the OPT record's flags: copied too */

/* Limits of the fast path; anything beyond them goes to the user-space server. */
#define MAX_LABEL_LEN   63     /* RFC 1035: a longer "length" is a pointer or garbage */
#define MAX_NAME_LEN    128    /* wire bytes of the longest name kept in the maps (<= 255) */
#define MAX_ADDRS       8      /* addresses per name and type */
#define EDNS_PAYLOAD    1232   /* the UDP size we advertise (the DNS flag day 2020 value) */

struct dnshdr {
	__be16 id;
	__be16 flags;
	__be16 qdcount;  /* questions */
	__be16 ancount;  /* answers */
	__be16 nscount;  /* authority records */
	__be16 arcount;  /* additional records (the OPT record counts here) */
};

/* Key of the `records` map: one record set. Zero-filled beyond the name, since a hash map
 * compares every byte of the key. */
struct dns_key {
	__u16 qtype;                /* DNS_TYPE_A or DNS_TYPE_AAAA, host order */
	__u8 name[MAX_NAME_LEN];    /* the name in wire format, letters in lower case */
};

/* Value of the `records` map: every address of that name and type. */
struct dns_rrset {
	__u32 ttl;                  /* seconds, host order */
	__u32 count;                /* addresses in use, 1..MAX_ADDRS */
	__u8 addrs[MAX_ADDRS][16];  /* A records use the first 4 bytes of each slot */
};

/* An answer record as it goes on the wire. Its name is a compression pointer to the question's
 * name, which sits at offset 12 of every message: 0xC00C. Packed: DNS aligns nothing. */
struct dns_answer {
	__be16 name;
	__be16 type;
	__be16 class;
	__be32 ttl;
	__be16 rdlength;
	__u8 rdata[16];             /* 4 bytes used for A, 16 for AAAA */
} __attribute__((packed));

#define ANSWER_HEAD_LEN 12     /* dns_answer without its rdata */
#define ANSWER_NAME_PTR 0xC00C

/* The OPT record: name "." (one zero byte), then type, class = UDP payload size, a TTL that
 * holds the extended RCODE, version and flags, and the length of its options. */
struct dns_opt {
	__u8 name;
	__be16 type;
	__be16 udp_payload;
	__u8 ext_rcode;
	__u8 version;
	__be16 flags;
	__be16 rdlength;
} __attribute__((packed));

#define MAX_QUERY_LEN   512    /* UDP bytes of the longest query answered (RFC 1035's limit) */
#define MAX_EDNS_OPTIONS 8     /* options walked in an OPT record; a query with more is passed */

/* The options of an OPT record: `len` bytes from byte `start` of the frame, each a 16-bit code, a
 * 16-bit length and that many bytes of data. They must fill the record exactly: a query whose
 * options lie about their lengths gets FORMERR from a full server, so the fast path must not
 * answer it (it passes it, and user space says FORMERR). Returns 1 if they are well formed.
 *
 * Each option's head is copied out with bpf_xdp_load_bytes(), which checks the offset itself,
 * rather than read through a packet pointer moved by lengths read from the packet: the
 * verifier would have to know how far such a pointer can be from the packet's start, and
 * Linux 6.1's loses track of it through the copies clang makes of a 32-bit offset. */
static __always_inline int edns_options_ok(struct xdp_md *ctx, __u32 start, __u32 len)
{
	__u32 off = 0, i;
	__u8 head[4];                 /* an option's code and length */

	for (i = 0; i < MAX_EDNS_OPTIONS; i++) {
		if (off == len)
			return 1;
		if (off > len)        /* the last option ran past the record */
			return 0;
		if (bpf_xdp_load_bytes(ctx, start + off, head, sizeof(head)))
			return 0;     /* past the end of the frame */
		off += 4 + ((head[2] << 8) | head[3]);
	}
	return off == len;
}

#endif /* BPFLAB_DNS_H */
