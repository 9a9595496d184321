"""The grader through its CLI: references full marks, starters zero, failures explained."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from bpflab.course.labs import ROOT, all_labs, load_lab
from bpflab.course.starters import starter_source
from grader import isolation
from tests.conftest import Graded, run_grader, submission_with

HELLO = load_lab("hello-xdp")


@pytest.mark.parametrize("lab", all_labs(), ids=lambda lab: lab.id)
def test_reference_scores_full_marks(lab, tmp_path):
    graded = run_grader(None, lab.id, tmp_path)  # no folder: the grader takes the lab's reference
    assert graded.exit_code == 0, graded.stderr
    assert f"Score: {lab.points}/{lab.points}" in graded.stdout, graded.stdout
    assert graded.results["score"] == graded.results["max_score"] == lab.points
    assert all(test["status"] == "passed" for test in graded.results["tests"] if test["max_score"])
    # Gradescope's leaderboard: the DNS lab puts the program's ns per answer on it.
    assert ("leaderboard" in graded.results) == (lab.id == "xdp-dns")
    for entry in graded.results.get("leaderboard", []):
        assert entry["order"] == "asc" and 0 < entry["value"] < 100_000, entry


@pytest.mark.parametrize("lab", all_labs(), ids=lambda lab: lab.id)
def test_starter_scores_zero_without_crashing(lab, tmp_path):
    folder = submission_with(tmp_path, lab.program, starter_source(lab.reference.read_text()))
    graded = run_grader(folder, lab.id, tmp_path)
    assert graded.exit_code == 0, graded.stderr
    assert f"Score: 0/{lab.points}" in graded.stdout, graded.stdout
    assert graded.results["score"] == 0
    assert "leaderboard" not in graded.results  # only a right answer is timed
    assert all(test["output"] for test in graded.results["tests"]), "every failure needs an explanation"
    assert "0/0" not in graded.stdout  # a test worth nothing is neither passed nor failed
    assert ("[INFO] --  " in graded.stdout) == any(not test["max_score"] for test in graded.results["tests"])


def test_a_graded_test_needs_points_and_a_docstring(tmp_path):
    """What the student reads for a test is its docstring's first line: the collector refuses a
    suite with a test that has none, as it refuses one without points."""
    for body, refusal in (("@points(1)\ndef test_x():\n    pass\n", "has no docstring saying what it checks"),
                          ('def test_x():\n    """Checks."""\n', "has no @points(n)"),
                          ('@points(1)\ndef test_x():\n    """Checks x."""\n', "")):
        suite = tmp_path / "test_suite.py"
        suite.write_text(f"from grader.checks import points\n\n\n{body}")
        done = subprocess.run([sys.executable, "-c", COLLECT, str(suite)], cwd=ROOT, capture_output=True,
                              text=True, timeout=60, check=False)
        assert refusal in done.stdout + done.stderr, done.stdout + done.stderr
        assert (done.returncode == 0) == (not refusal), done.stdout + done.stderr


COLLECT = """
import sys, pytest
from bpflab.course.labs import load_lab
from grader.runner import Collector, LabResult
code = pytest.main([sys.argv[1], "-q", "-p", "no:cacheprovider"],
                   plugins=[Collector(LabResult(lab=load_lab("hello-xdp"), submission=None))])
sys.exit(int(code))
"""


def test_unchecked_read_scores_zero_with_the_verifier_line(tmp_path):
    reference = HELLO.reference.read_text()
    check = "\tif (!eth)\n\t\treturn XDP_PASS; /* shorter than an Ethernet header: not ours to judge */\n"
    broken = reference.replace(check, "")
    broken = broken.replace("eth = parse_ethhdr(&c);", "eth = c.pos;")
    assert broken != reference
    graded = run_grader(submission_with(tmp_path, HELLO.program, broken), HELLO.id, tmp_path)
    assert graded.exit_code == 0, graded.stderr
    assert f"Score: 0/{HELLO.points}" in graded.stdout
    assert "The kernel's verifier rejected hello_xdp()" in graded.stdout
    assert "invalid access to packet" in graded.stdout
    assert "at hello_xdp.c:" in graded.stdout and "eth->h_proto" in graded.stdout
    assert "invalid access to packet" in graded.results["output"]


def test_compile_error_scores_zero_with_the_compiler_line(tmp_path):
    broken = HELLO.reference.read_text().replace("proto = ip->protocol;", "proto = ip->protocol")
    graded = run_grader(submission_with(tmp_path, HELLO.program, broken), HELLO.id, tmp_path)
    assert graded.exit_code == 0 and graded.results["score"] == 0
    assert "does not compile" in graded.stdout
    assert "hello_xdp.c:" in graded.stdout and "error:" in graded.stdout


def test_missing_file_scores_zero_and_says_so(tmp_path):
    graded = run_grader(submission_with(tmp_path, "other.c", "int x;\n"), HELLO.id, tmp_path)
    assert graded.exit_code == 0 and graded.results["score"] == 0
    assert "no file called hello_xdp.c" in graded.stdout


def test_a_program_that_drops_everything_loses_the_network_points(tmp_path):
    dropper = HELLO.reference.read_text().replace("\t/* END SOLUTION */\n\treturn XDP_PASS;",
                                                   "\t/* END SOLUTION */\n\treturn XDP_DROP;")
    graded = run_grader(submission_with(tmp_path, HELLO.program, dropper), HELLO.id, tmp_path)
    assert graded.results["score"] == 0, graded.stdout
    assert "returned XDP_DROP" in graded.stdout and "replies came back" in graded.stdout


def test_files_a_student_adds_are_never_loaded(tmp_path):
    folder = submission_with(tmp_path, HELLO.program, HELLO.reference.read_text())
    canary = tmp_path / "canary"
    (folder / "conftest.py").write_text(f"open({str(canary)!r}, 'w').write('loaded')\n")
    (folder / "pytest.ini").write_text("[pytest]\naddopts = --this-option-does-not-exist\n")
    graded = run_grader(folder, HELLO.id, tmp_path)
    assert f"Score: {HELLO.points}/{HELLO.points}" in graded.stdout, graded.stdout + graded.stderr
    assert not canary.exists()


def test_list_names_every_lab():
    listed = subprocess.run([sys.executable, "-m", "grader", "list"], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert all(lab.id in listed.stdout for lab in all_labs())


def test_unknown_lab_is_a_usage_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "grader", "grade", "bpf", "--lab", "nope"], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    assert done.returncode == 2 and "known labs: hello-xdp" in done.stderr


# Broken versions of the echo references, made by editing the reference's text. Each names what
# it breaks, the edits, whether it keeps some points, and words its feedback must contain.
ECHO_VARIANTS = {
    "xdp-icmp": {
        "replies-to-every-frame": ([("return XDP_PASS;", "return XDP_TX;")], "partial", "untouched"),
        "wrong-icmp-checksum": (
            [("\ticmp->checksum = csum_replace16(icmp->checksum, old, *(__u16 *)icmp);\n", "")],
            "partial", "First wrong byte at offset 36"),
        "drops-everything": (
            [("return XDP_PASS;", "return XDP_DROP;"), ("return XDP_TX;", "return XDP_DROP;")],
            "zero", "returned XDP_DROP"),
        "verifier-rejects": ([("struct iphdr *ip = parse_iphdr(c);", "struct iphdr *ip = c->pos;")], "zero",
                             "invalid access to packet"),
    },
    "tc-icmp": {
        "replies-to-every-frame": ([("return TC_ACT_OK;", "return bpf_redirect(skb->ifindex, 0);")],
                                   "partial", "untouched"),
        "wrong-icmp-checksum": (
            [("bpf_l4_csum_replace(skb, ICMP_CSUM_OFF, old_type, new_type, sizeof(new_type)) ||", "")],
            "partial", "First wrong byte at offset 36"),
        "drops-everything": ([("return TC_ACT_OK;", "return TC_ACT_SHOT;"),
                              ("return bpf_redirect(skb->ifindex, 0);", "return TC_ACT_SHOT;")],
                             "zero", "returned TC_ACT_SHOT"),
        "verifier-rejects": ([("struct iphdr *ip = parse_iphdr(c);", "struct iphdr *ip = c->pos;")], "zero",
                             "invalid access to packet"),
    },
}
def grade_variant(lab, name: str, edits: list[tuple[str, str]], tmp_path) -> Graded:
    """Grade the reference with `edits` made to its text, through the real CLI."""
    text = lab.reference.read_text()
    for old, new in edits:
        assert old in text, f"{name}: the reference no longer holds {old!r}"
        text = text.replace(old, new)
    graded = run_grader(submission_with(tmp_path, lab.program, text), lab.id, tmp_path)
    assert graded.exit_code == 0, graded.stderr
    return graded


VARIANTS = [(lab, name, *spec) for lab, variants in ECHO_VARIANTS.items() for name, spec in variants.items()]


@pytest.mark.parametrize(("lab_id", "name", "edits", "outcome", "feedback"), VARIANTS,
                         ids=[f"{v[0]}-{v[1]}" for v in VARIANTS])
def test_broken_echo_servers_lose_the_points_of_what_they_break(lab_id, name, edits, outcome, feedback,
                                                                 tmp_path):
    lab = load_lab(lab_id)
    graded = grade_variant(lab, name, edits, tmp_path)
    score = graded.results["score"]
    assert (0 < score < lab.points) if outcome == "partial" else score == 0, graded.stdout
    assert feedback in graded.stdout, graded.stdout


# Broken versions of the DNS reference, and exactly the tests each must fail: a mistake costs
# the points of the behaviour it breaks (and of the fuzzer, where fuzzed frames meet it).
DNS_VARIANTS = {
    "case-sensitive": ([("\t\t\tif (c >= 'A' && c <= 'Z')\n\t\t\t\tc += 'a' - 'A';\n", "")],
                       {"test_names_match_in_any_case_and_keep_theirs", "test_mixed_case_over_the_network",
                        "test_fuzzed_frames_get_no_wrong_answer"}),
    "udp-checksum-without-pseudo-header": (
        [("\tsum = q->addr_sum + bpf_htons(IPPROTO_UDP) + bpf_htons(udp_len);\n",
          "\tsum = 0; /* forgot the pseudo-header */\n")],
        {"test_udp_checksums_are_right", "test_fuzzed_frames_get_no_wrong_answer",
         # the client's kernel drops the answers, so every network test fails too
         "test_dig_is_answered_by_xdp", "test_mixed_case_over_the_network",
         "test_dnspython_over_ipv6_with_and_without_edns",
         "test_what_xdp_passes_reaches_the_user_space_server"}),
    "answers-responses": ([("(q->flags & (DNS_QR | DNS_OPCODE | DNS_TC))",
                            "(q->flags & (DNS_OPCODE | DNS_TC))")],
                          {"test_responses_are_never_answered"}),
}


@pytest.mark.parametrize("name", DNS_VARIANTS)
def test_broken_dns_servers_lose_the_points_of_what_they_break(name, tmp_path):
    edits, failing = DNS_VARIANTS[name]
    graded = grade_variant(load_lab("xdp-dns"), name, edits, tmp_path)
    named = function_names(load_lab("xdp-dns").suite)
    lost = {named[test["name"]] for test in graded.results["tests"] if test["score"] < test["max_score"]}
    assert lost == failing, graded.stdout


# Broken versions of the xdp-cache reference, and exactly the tests each must fail (the hidden
# suite's included): without the invalidation, the stale-read test by name among them. A fill
# that ignores writes since its miss is caught every time by the raced-write test, which makes
# the race; the random operations catch it only when chance makes it (1 stale read in 10,000,
# once in 5 CI runs): they may fail it too, and nothing else may.
RANDOM_STALE_READS = "test_no_stale_reads_under_random_operations"
CACHE_VARIANTS = {
    "no-invalidation": ([("\t\t__sync_fetch_and_add(now, 1);\n", "")],
                        {"test_set_then_get_returns_the_new_value",
                         "test_delete_and_incr_invalidate_over_udp_and_tcp",
                         RANDOM_STALE_READS,
                         "test_a_reply_that_raced_a_write_does_not_fill",
                         "test_pipelined_writes_invalidate_every_key"}, set()),
    "fill-ignores-writes-since-the-miss": ([("\tif (get->epoch != current_epoch()) {", "\tif (0) {")],
                                           {"test_a_reply_that_raced_a_write_does_not_fill"},
                                           {RANDOM_STALE_READS}),
}


@pytest.mark.parametrize("name", CACHE_VARIANTS)
def test_broken_caches_lose_the_points_of_what_they_break(name, tmp_path):
    edits, failing, by_chance = CACHE_VARIANTS[name]
    lab = load_lab("xdp-cache")
    graded = grade_variant(lab, name, edits, tmp_path)
    named = {**function_names(lab.suite), **function_names(lab.hidden_suite)}
    lost = {named[test["name"]] for test in graded.results["tests"] if test["score"] < test["max_score"]}
    assert failing <= lost <= failing | by_chance, graded.stdout
    assert name != "no-invalidation" or "read a stale value" in graded.stdout, graded.stdout


def function_names(suite: Path) -> dict[str, str]:
    """A suite's tests by the name a report gives them (their docstring's first line)."""
    tree = ast.parse(suite.read_text())
    return {ast.get_docstring(node).splitlines()[0]: node.name for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


# Answer files for the question set: each with its score and words its feedback must contain.
MEASURE = load_lab("measure")
MEASURE_CASES = {
    "not-toml": ("kernel_p90_us = 40 µs\n", 0, "is not valid TOML"),
    "nested-too-deeply": ("x = " + "[" * 30000 + "]" * 30000 + "\n", 0, "nests arrays or tables too deeply"),
    "byte-order-mark": ("\ufeff" + MEASURE.reference.read_text(), MEASURE.points, "Score: 22/22"),
    "some-right-some-wrong": (
        {"kernel_p90_us": '"39"', "xdp_within_20us": "0.9", "highest_median": '"KERNEL"',
         "tc_echo_above_floor_ns": "541", "dnsperf_limit": '"a"', "veth_rtt": '"e"',
         "repeats_time": '"b"', "stats_vs_testrun": "inf"},
        6, "must be one of 'a', 'b', 'c', 'd'; it is 'e'"),  # right: highest_median, tc_echo, repeats
}


@pytest.mark.parametrize("name", MEASURE_CASES)
def test_question_set_answers_are_scored_and_explained(name, tmp_path):
    """Bad files score 0 with the reason; answers score one by one, a blank or wrong one explained."""
    answers, score, words = MEASURE_CASES[name]
    text = answers
    if isinstance(answers, dict):
        text = starter_source(MEASURE.reference.read_text())
        for key, value in answers.items():
            assert f'\n{key} = ""\n' in text
            text = text.replace(f'\n{key} = ""\n', f"\n{key} = {value}\n")
    graded = run_grader(submission_with(tmp_path, MEASURE.program, text), MEASURE.id, tmp_path)
    assert graded.exit_code == 0, graded.stderr
    assert graded.results["score"] == score, graded.stdout
    assert words in graded.stdout, graded.stdout
    assert all(test["output"] for test in graded.results["tests"] if test["score"] == 0)
    if isinstance(answers, dict):
        assert "is not answered yet: put your answer after `generator_over_dnsperf =`" in graded.stdout
        assert "0.9 is more than 15% away from what the data show" in graded.stdout
        assert "`kernel_p90_us` must be a plain number" in graded.stdout  # "39" is text
        assert "'a' is not the answer. The client side is the bottleneck" in graded.stdout


# Broken versions of the tcp-state reference, the tests each must fail, and words of its feedback.
TCP_VARIANTS = {
    # The verifier refuses the lookup without its release: step 1's part only, with the hint.
    "lookup-without-release": (
        [("\t\tbpf_sk_release(sk); /* the lookup took a reference: the verifier insists it is given back */"
          "\n", "")],
        {"test_xdp_counts_every_segment_by_socket_state", "test_xdp_sees_time_wait_and_no_socket",
         "test_xdp_seen_passes_malformed_segments", "test_xdp_leaves_other_traffic_alone"},
        "bpf_sk_release() on every path"),
    # A shield that never checks the cookie of a handshake's ACK lets forged ones through.
    "shield-without-cookie-check": (
        [("long valid = bpf_tcp_check_syncookie(sk, ip, sizeof(*ip), tcp, sizeof(*tcp));",
          "long valid = 0;")],
        {"test_shield_drops_forged_acks"}, "forged cookie"),
    # A SYN-ACK whose sequence number is no cookie: the kernel refuses the handshake's ACK.
    "shield-with-made-up-cookie": (
        [("th->seq = bpf_htonl((__u32)cookie);", "th->seq = bpf_htonl(their_seq ^ 0x5a5a5a5a);")],
        {"test_shield_answers_with_a_cookie_the_kernel_accepts", "test_shield_drops_forged_acks",
         "test_syn_flood_does_not_reach_the_listener"},
        "could not connect through the shield"),
}


@pytest.mark.parametrize("name", TCP_VARIANTS)
def test_broken_tcp_state_programs_lose_the_points_of_what_they_break(name, tmp_path):
    lab = load_lab("tcp-state")
    edits, failing, feedback = TCP_VARIANTS[name]
    graded = grade_variant(lab, name, edits, tmp_path)
    named = function_names(lab.suite) | function_names(lab.hidden_suite)
    lost = {named[test["name"]] for test in graded.results["tests"] if test["score"] < test["max_score"]}
    assert lost == failing, graded.stdout
    assert feedback in graded.stdout, graded.stdout


def test_time_limits_stretch_on_a_slower_machine_and_never_shrink(monkeypatch):
    """Under QEMU's emulation a reference took over 30 s to compile: the defaults must scale."""
    assert isolation.slowness() >= 1
    monkeypatch.setattr(isolation, "slowness", lambda: 8.0)
    stretched, defaults = isolation.machine_limits(), isolation.Limits()
    assert (stretched.seconds, stretched.compile_seconds, stretched.startup_seconds) == \
        (8 * defaults.seconds, 8 * defaults.compile_seconds, 8 * defaults.startup_seconds)
    assert stretched.memory == defaults.memory
