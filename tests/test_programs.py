"""Compile, load and attach, and the plain-words explanation of every failure."""

from __future__ import annotations

import pytest

from bpflab.attach import attach, detach_tc, xdp_mode
from bpflab.programs import BPF_PROG_TYPE_XDP, ProgramError, load_raw, load_text
from bpflab.topology import Topology, run_in
from bpflab.verdicts import XDP_PASS

HEAD = '#include "parsing.h"\n'
UNCHECKED = HEAD + """int xdp_unchecked(struct xdp_md *ctx)
{
\tstruct ethhdr *eth = (void *)(long)ctx->data;

\tif (eth->h_proto == 0)
\t\treturn XDP_DROP;
\treturn XDP_PASS;
}
"""
MISSING_SEMICOLON = HEAD + "int xdp_typo(struct xdp_md *ctx)\n{\n\treturn XDP_PASS\n}\n"
TC_PASS = "#include <uapi/linux/bpf.h>\n#include <uapi/linux/pkt_cls.h>\n" \
    "int tc_pass(struct __sk_buff *skb) { return TC_ACT_OK; }\n"


def test_compile_error_names_the_file_and_line():
    with pytest.raises(ProgramError) as caught:
        load_text(MISSING_SEMICOLON, "xdp_typo", "xdp", filename="typo.c")
    error = caught.value
    assert error.stage == "compile"
    assert error.decisive.startswith("typo.c:4:")
    assert "expected ';'" in error.decisive


def test_verifier_rejection_points_at_the_unchecked_read():
    with pytest.raises(ProgramError) as caught:
        load_text(UNCHECKED, "xdp_unchecked", "xdp", filename="unchecked.c")
    error = caught.value
    assert error.stage == "verify"
    assert "invalid access to packet" in error.decisive
    assert "at unchecked.c:6: if (eth->h_proto == 0)" in error.decisive
    assert "hint: check `pointer + size <= data_end`" in error.decisive
    assert "processed" in error.log  # the whole log is kept


def test_wrong_entry_name_is_explained():
    with pytest.raises(ProgramError, match="no function called xdp_other"):
        load_text(HEAD + "int xdp_one(struct xdp_md *c) { return XDP_PASS; }\n", "xdp_other", "xdp")


def test_xdp_attaches_natively_on_veth_and_detaches():
    fd = load_raw(BPF_PROG_TYPE_XDP, XDP_PASS, "pass")
    from bpflab.attach import attach_xdp, detach_xdp

    with Topology() as topo:
        assert attach_xdp(topo.server.netns, topo.server.ifname, fd) == "native"
        assert xdp_mode(topo.server.netns, topo.server.ifname) == "native"
        detach_xdp(topo.server.netns, topo.server.ifname)
        assert xdp_mode(topo.server.netns, topo.server.ifname) is None


def test_tc_program_attaches_at_ingress_and_detaches():
    program = load_text(TC_PASS, "tc_pass", "tc")
    try:
        with Topology() as topo:
            assert attach(program, topo.server.netns, topo.server.ifname) == "tc ingress"
            shown = run_in(topo.server.netns, ["tc", "filter", "show", "dev", topo.server.ifname, "ingress"])
            assert "tc_pass" in shown.stdout and "direct-action" in shown.stdout
            assert topo.ping(count=3).received == 3
            detach_tc(topo.server.netns, topo.server.ifname)
            shown = run_in(topo.server.netns, ["tc", "filter", "show", "dev", topo.server.ifname, "ingress"])
            assert "tc_pass" not in shown.stdout
    finally:
        program.close()
