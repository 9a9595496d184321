"""The common verifier mistakes, each made once in the xdp-icmp reference, and what must be said.

Used by tests/test_explain.py: each through `load()`, as a notebook's load cell does, and one of
each kind through the grader, as `make check` does. Each mistake names the line
the student must be shown and words of the hint that says what to change.
"""

from __future__ import annotations

from dataclasses import dataclass

from bpflab.course.labs import load_lab

LAB = load_lab("xdp-icmp")
REFERENCE = LAB.reference.read_text()

LENGTH_LOOP = """
/* A checksum loop bounded by the packet's own length. */
static __always_inline void sum_words(__u16 *word, void *end, __u32 len, __u32 *sum)
{
	for (__u32 i = 0; i < len / 2; i++) {
		if ((void *)(word + i + 1) > end)
			break;
		*sum += word[i];
	}
}
"""


@dataclass(frozen=True)
class Mistake:
    name: str
    old: str  # text of the reference to replace
    new: str
    line: str  # the code on the line that the feedback must name
    words: tuple[str, ...]  # words the feedback must contain
    loads: bool = False  # the kernel accepts it: the warning, not a refusal, must say it
    extra: str = ""  # code added after the includes
    not_words: tuple[str, ...] = ()  # words that would send the student after a non-problem

    def source(self) -> str:
        assert self.old in REFERENCE, f"{self.name}: the reference changed, update the mistake"
        text = REFERENCE.replace(self.old, self.new, 1)
        return text.replace('#include "echo.h"\n', '#include "echo.h"\n' + self.extra, 1)


MISTAKES = [
    Mistake("no data_end check", "icmp = parse_icmphdr(c);", "icmp = c->pos;",
            "if (!icmp || icmp->type != ICMP_ECHO", ("data_end",)),
    Mistake("map value without NULL check", "\tif (count)\n\t\t*count += 1;", "\t*count += 1;",
            "__u64 *count = replies.lookup(&kind);", ("NULL",)),
    Mistake("checksum loop bounded by a packet length",
            "if (csum_add_xdp(ctx, icmp, icmp_len, &sum) || csum_fold16(sum) != 0xffff)",
            "sum_words((void *)icmp, c->end, icmp_len, &sum);\n\tif (csum_fold16(sum) != 0xffff)",
            "for (__u32 i = 0; i < len / 2; i++) {", ("constant bound", "csum_add_xdp"), extra=LENGTH_LOOP),
    Mistake("600 bytes on the stack", "\t__u32 key = 0;\n",
            "\t__u32 key = 0;\n\tvolatile __u8 buf[600];\n\n\tbuf[ctx->rx_queue_index % 600] = 1;\n",
            "volatile __u8 buf[600];", ("512 bytes", "per-CPU array"), not_words=("how big is it",)),
    Mistake("uninitialised map key", "\t__u32 key = 0;\n", "\t__u32 key;\n",
            "struct server_addrs *me = server.lookup(&key);", ("not written on every path", "__u32 key = 0;"),
            loads=True),
    Mistake("packet pointer plus a variable offset",
            "\ticmp_len = bpf_ntohs(ip->tot_len) - sizeof(*ip);\n",
            "\ticmp_len = bpf_ntohs(ip->tot_len) - sizeof(*ip);\n"
            "\t__u8 *last = (void *)ip + bpf_ntohs(ip->tot_len) - 1;\n"
            "\tif ((void *)(last + 1) > c->end || *last == 0xff)\n\t\treturn XDP_PASS;\n",
            "if ((void *)(last + 1) > c->end || *last == 0xff)", ("variable offset", "LIMIT")),
    Mistake("a TC helper at XDP", "\tif (!eth || !me", "\tbpf_skb_pull_data(ctx, 0);\n\tif (!eth || !me",
            "bpf_skb_pull_data(ctx, 0);", ("TC programs only", "bpf_xdp_load_bytes")),
    Mistake("7 returned as the verdict", "\t\treturn echo_v6(ctx, &c, eth, me);\n\treturn XDP_PASS;\n}",
            "\t\treturn echo_v6(ctx, &c, eth, me);\n\treturn 7;\n}", "return 7;",
            ("not an XDP action", "XDP_ABORTED"), loads=True),
    Mistake("a pointer returned as the verdict",
            "\t\treturn echo_v6(ctx, &c, eth, me);\n\treturn XDP_PASS;\n}",
            "\t\treturn echo_v6(ctx, &c, eth, me);\n\treturn (long)eth;\n}", "return (long)eth;",
            ("an address (a pointer)", "XDP_PASS, XDP_TX"), loads=True),
]
