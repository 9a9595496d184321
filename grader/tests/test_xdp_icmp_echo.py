"""Lab 1, xdp-icmp: a ping server in the driver hook. The tests and their points are in
echo_suite.py, shared with the TC lab: the behaviour graded is the same at both hooks."""

from echo_suite import (  # noqa: I001 (in the suite's order, which is the order they run and are shown)
    server,
    serving,
    test_echo_v4_replies,
    test_echo_v6_replies,
    test_passes_other_traffic,
    test_passes_requests_not_for_the_server,
    test_passes_fragments_options_vlan_and_extension_headers,
    test_passes_damaged_frames,
    test_passes_truncated_frames,
    test_ping_answered_by_the_program,
    test_ping6_answered_by_the_program,
    test_full_size_pings_answered,
    test_reply_on_the_wire_is_exact,
    test_frames_for_other_hosts_get_no_reply_on_the_wire,
    test_kernel_answers_what_the_program_passes,
    test_fuzz_never_a_wrong_reply,
    test_fuzz_over_the_veth,
)

LAB = "xdp-icmp"
