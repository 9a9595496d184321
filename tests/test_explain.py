"""The verifier explainer: each class of message, made by a real program the kernel refuses.

Every case is compiled by BCC and loaded into this machine's kernel; nothing is mocked. A case
names the line the feedback must point at and words its hint must contain. Classes the
kernel only shows to unprivileged loaders (`back-edge`, `invalid indirect read from stack`) or
that BCC cannot produce (bpf-to-bpf calls: `combined stack size`) are matched by the rules
but have no program here.
"""

from __future__ import annotations

import warnings

import pytest

from bpflab.programs import CompilerWarning, ProgramError, compile_source, load_text
from bpflab.verdicts import verdict
from tests.conftest import run_grader, submission_with
from tests.mistakes import LAB, MISTAKES, Mistake

HEAD = '#include "parsing.h"\n'
TC_HEAD = '#include "parsing.h"\n#include <linux/pkt_cls.h>\n'

# name: (hook, program, the line to point at, words of the hint)
REFUSED = {
    "packet-bounds": ("xdp", HEAD + """int prog(struct xdp_md *ctx)
{
\tstruct ethhdr *eth = (void *)(long)ctx->data;
\treturn eth->h_proto == 8 ? XDP_DROP : XDP_PASS;
}
""", "return eth->h_proto == 8", "data_end"),
    "variable-packet-offset": ("xdp", HEAD + """int prog(struct xdp_md *ctx)
{
\tvoid *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
\tstruct ethhdr *eth = data;
\tif ((void *)(eth + 1) > end)
\t\treturn XDP_PASS;
\t__u8 *p = data + eth->h_proto;
\tif ((void *)(p + 1) > end)
\t\treturn XDP_PASS;
\treturn *p ? XDP_PASS : XDP_DROP;
}
""", "return *p ? XDP_PASS : XDP_DROP;", "LIMIT"),
    "unbounded-offset": ("xdp", HEAD + """int prog(struct xdp_md *ctx)
{
\tvoid *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
\tif (data + 20 > end)
\t\treturn XDP_PASS;
\tint offset = *(int *)(data + 14);
\t__u8 *p = data + offset;
\tif ((void *)(p + 1) > end)
\t\treturn XDP_PASS;
\treturn *p;
}
""", "__u8 *p = data + offset;", "unsigned"),
    "null-check": ("xdp", HEAD + """BPF_HASH(seen, __u32, __u64, 16);
static __always_inline void bump(__u32 key)
{
\t__u64 *count = seen.lookup(&key);
\t*count += 1;
}
int prog(struct xdp_md *ctx)
{
\tbump(ctx->ingress_ifindex);
\treturn XDP_PASS;
}
""", "*count += 1;", "NULL"),
    "scalar-pointer": ("xdp", HEAD + """int prog(struct xdp_md *ctx)
{
\tstruct ethhdr *eth = (void *)(long)ctx->data;
\tif ((void *)(eth + 1) > (void *)(long)ctx->data_end)
\t\treturn XDP_PASS;
\tbpf_xdp_adjust_head(ctx, 0);
\treturn eth->h_proto ? XDP_PASS : XDP_DROP;
}
""", "return eth->h_proto ? XDP_PASS", "parse again"),
    "too-large": ("xdp", HEAD + """#define BYTES 24
int prog(struct xdp_md *ctx)
{
\t__u8 *p = (void *)(long)ctx->data;
\t__u32 mask = 0, k;

\tif ((void *)(p + BYTES) > (void *)(long)ctx->data_end)
\t\treturn XDP_PASS;
#pragma unroll
\tfor (k = 0; k < BYTES; k++)
\t\tif (p[k] > 7)
\t\t\tmask |= 1 << k;
\treturn mask == 0xabcdef ? XDP_DROP : XDP_PASS;
}
""", "", "million instructions"),
    "loop-too-complex": ("xdp", HEAD + """int prog(struct xdp_md *ctx)
{
\tvoid *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
\t__u16 *word = data;
\t__u32 sum = 0, len = end - data, i;
\tfor (i = 0; i < len / 2; i++) {
\t\tif ((void *)(word + i + 1) > end)
\t\t\tbreak;
\t\tsum += word[i];
\t}
\treturn sum ? XDP_PASS : XDP_DROP;
}
""", "for (i = 0; i < len / 2; i++) {", "MAX_CSUM_WORDS"),
    "infinite-loop": ("xdp", HEAD + """int prog(struct xdp_md *ctx)
{
\tvolatile int stop = 0;
\twhile (!stop)
\t\t;
\treturn XDP_PASS;
}
""", "while (!stop)", "forever"),
    "pointer-arithmetic": ("xdp", HEAD + """int prog(struct xdp_md *ctx)
{
\tlong x = (long)ctx->data;
\tbarrier_var(x);
\tx ^= 1;
\tbarrier_var(x);
\treturn x & 1;
}
""", "x ^= 1;", "barrier_var"),
    "context-access": ("xdp", HEAD + """int prog(struct xdp_md *ctx)
{
\tctx->data = 0;
\treturn XDP_PASS;
}
""", "ctx->data = 0;", "ctx->data_end"),
    "unreleased-reference": ("xdp", HEAD + """int prog(struct xdp_md *ctx)
{
\tstruct bpf_sock_tuple tuple = {};
\tstruct bpf_sock *sk = bpf_sk_lookup_tcp(ctx, &tuple, sizeof(tuple.ipv4), -1, 0);
\tif (sk)
\t\treturn XDP_DROP;
\treturn XDP_PASS;
}
""", "bpf_sk_lookup_tcp(ctx", "bpf_sk_release"),
    "map-value-bounds": ("xdp", HEAD + """BPF_ARRAY(seen, __u64, 1);
int prog(struct xdp_md *ctx)
{
\t__u32 key = 0;
\t__u8 *value = (__u8 *)seen.lookup(&key);
\tif (!value)
\t\treturn XDP_PASS;
\treturn value[ctx->rx_queue_index];
}
""", "return value[ctx->rx_queue_index];", "bound it"),
    "helper-at-hook (XDP)": ("xdp", HEAD + """int prog(struct xdp_md *ctx)
{
\tbpf_skb_pull_data(ctx, 64);
\treturn XDP_PASS;
}
""", "bpf_skb_pull_data(ctx, 64);", "bpf_xdp_load_bytes"),
    "helper-at-hook (TC)": ("tc", TC_HEAD + """int prog(struct __sk_buff *skb)
{
\tbpf_xdp_adjust_head(skb, 0);
\treturn TC_ACT_OK;
}
""", "bpf_xdp_adjust_head(skb, 0);", "bpf_skb_change_head"),
}

# Refused by the compiler, some by LLVM ending its process: the caller must survive.
NOT_COMPILED = {
    "stack-limit": (HEAD + """int prog(struct xdp_md *ctx)
{
\tvolatile __u8 buf[600];
\tbuf[0] = 1;
\treturn buf[ctx->rx_queue_index % 600] ? XDP_PASS : XDP_DROP;
}
""", "prog.c:4: volatile __u8 buf[600];    <- 600 bytes", "512 bytes"),
    "memcpy": (HEAD + """int prog(struct xdp_md *ctx)
{
\t__u8 buf[64];
\t__builtin_memcpy(buf, (void *)(long)ctx->data, ctx->rx_queue_index & 63);
\treturn buf[0];
}
""", "__builtin_memcpy(buf", "constant SIZE"),
    "syntax": (HEAD + "int prog(struct xdp_md *ctx)\n{\n\treturn XDP_PASS\n}\n", "prog.c:4: return XDP_PASS",
               "expected ';'"),
}

# Loaded by the kernel (root may), warned about with the line.
WARNED = {
    "uninitialised variable": (HEAD + """int prog(struct xdp_md *ctx)
{
\t__u32 action;
\tif (ctx->ingress_ifindex > 3)
\t\taction = XDP_DROP;
\treturn action;
}
""", "if (ctx->ingress_ifindex > 3)", "uninitialized"),
    "never-written map key": (HEAD + """BPF_HASH(seen, __u32, __u64, 16);
int prog(struct xdp_md *ctx)
{
\t__u32 key;
\t__u64 *count = seen.lookup(&key);
\tif (count)
\t\t*count += 1;
\treturn XDP_PASS;
}
""", "seen.lookup(&key);", "not written on every path"),
    "no verdict": (HEAD + "int prog(struct xdp_md *ctx)\n{\n\treturn 7;\n}\n", "return 7;",
                   "not an XDP action"),
}


def refusal(text: str, hook: str = "xdp", filename: str = "prog.c", entry: str = "prog") -> ProgramError:
    with pytest.raises(ProgramError) as caught:
        load_text(text, entry, hook, filename)
    return caught.value


def assert_points_at(feedback: str, filename: str, line: str, words: str | tuple[str, ...]) -> None:
    for word in (words,) if isinstance(words, str) else words:
        assert word in feedback, f"no {word!r} in:\n{feedback}"
    if line:
        numbered = [f"{filename}:{n}: {text.strip()}" for n, text in
                    enumerate(feedback_source[filename].splitlines(), 1) if line in text]
        assert any(where in feedback for where in numbered), f"not at {line!r}:\n{feedback}"


feedback_source: dict[str, str] = {}


@pytest.mark.parametrize("name", REFUSED)
def test_verifier_refusal_is_explained_on_its_line(name: str) -> None:
    hook, text, line, words = REFUSED[name]
    feedback_source["prog.c"] = text
    error = refusal(text, hook)
    assert error.stage == "verify"
    assert_points_at(error.explain(), "prog.c", line, ("hint: ", words))


@pytest.mark.parametrize("name", NOT_COMPILED)
def test_compiler_refusal_is_explained_and_survived(name: str) -> None:
    text, line, words = NOT_COMPILED[name]
    feedback_source["prog.c"] = text
    error = refusal(text)
    assert error.stage == "compile"
    assert words in error.explain(), error.explain()
    assert line in error.explain(), error.explain()


@pytest.mark.parametrize("name", WARNED)
def test_loaded_mistake_is_warned_about_on_its_line(name: str) -> None:
    text, line, words = WARNED[name]
    feedback_source["prog.c"] = text
    with pytest.warns(CompilerWarning) as caught:
        load_text(text, "prog", "xdp", "prog.c").close()
    shown = "\n".join(str(w.message) for w in caught)
    assert_points_at(shown, "prog.c", line, words)


def test_the_references_load_without_warnings() -> None:
    """A warning on a correct program would teach students to ignore warnings."""
    from bpflab.course.labs import program_labs

    for lab in program_labs():
        compiled = compile_source(lab.reference, lab.hook)
        try:
            for entry in lab.entries:  # a gym's every exercise, a several-program lab's every part
                with warnings.catch_warnings():
                    warnings.simplefilter("error", CompilerWarning)
                    compiled.load(entry, owns_module=False, hook=lab.hook_of(entry))
        finally:
            compiled.bpf.cleanup()


@pytest.mark.parametrize("mistake", MISTAKES, ids=lambda m: m.name)
def test_each_common_mistake_in_the_xdp_icmp_reference_is_explained(mistake: Mistake) -> None:
    """The eight mistakes of issue 13, as a notebook's load cell meets them."""
    feedback_source[LAB.program] = mistake.source()
    if mistake.loads:
        with pytest.warns(CompilerWarning) as caught:
            load_text(mistake.source(), LAB.entry, LAB.hook, LAB.program).close()
        shown = "\n".join(str(w.message) for w in caught)
    else:
        shown = refusal(mistake.source(), LAB.hook, LAB.program, LAB.entry).explain()
    assert_points_at(shown, LAB.program, mistake.line, mistake.words)
    assert not [word for word in mistake.not_words if word in shown], shown


THROUGH_THE_GRADER = ("600 bytes on the stack", "a TC helper at XDP", "a pointer returned as the verdict")


@pytest.mark.parametrize("mistake", [m for m in MISTAKES if m.name in THROUGH_THE_GRADER],
                         ids=lambda m: m.name)
def test_make_check_explains_a_mistake_as_the_load_cell_does(mistake: Mistake, tmp_path) -> None:
    """The same words reach `make check`: one mistake of each kind (LLVM's refusal, the
    verifier's, a warning about a program that loads), graded through the real CLI."""
    feedback_source[LAB.program] = mistake.source()
    graded = run_grader(submission_with(tmp_path, LAB.program, mistake.source()), LAB.id, tmp_path)
    assert graded.exit_code == 0, graded.stderr
    assert_points_at(graded.stdout, LAB.program, mistake.line, mistake.words)
    assert "stopped unexpectedly" not in graded.stdout


def test_verdicts_that_are_none_are_named() -> None:
    assert verdict("xdp", 2) == "XDP_PASS"
    assert "not an XDP action" in verdict("xdp", 7)
    assert verdict("tc", 7) == "TC_ACT_REDIRECT"
    assert "not a TC action" in verdict("tc", 42)


def test_a_notebook_cell_that_loads_a_broken_program_shows_the_explanation_and_the_kernel_lives(tmp_path):
    """The stack mistake ends LLVM's process; in a notebook it is an explanation, not a dead kernel,
    and the cell shows the explanation rather than the runtime's traceback."""
    import nbformat
    from nbclient import NotebookClient

    source = tmp_path / LAB.program
    source.write_text(next(m for m in MISTAKES if m.name == "600 bytes on the stack").source())
    notebook = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(f"from bpflab.programs import load\nprogram = load({str(source)!r}, "
                                  f"{LAB.entry!r}, {LAB.hook!r})"),
        nbformat.v4.new_code_cell("print('still alive')"),
    ])
    NotebookClient(notebook, timeout=300, kernel_name="python3", allow_errors=True).execute()
    error = notebook.cells[0].outputs[-1]
    assert error.output_type == "error" and error.ename == "ProgramError"
    shown = "\n".join(error.traceback)
    assert "512 bytes" in shown and f"{LAB.program}:" in shown and "programs.py" not in shown, shown
    assert notebook.cells[1].outputs[0].text == "still alive\n"


@pytest.mark.parametrize(("message", "hook", "words"), [
    # clang 19 merges neighbouring 32-bit context reads (seen in tcp_state.c's sock_ops program)
    ("invalid bpf_context access off=24 size=8", "sock_ops", "barrier_var"),
    ("invalid bpf_context access off=76 size=4", "sock_ops", "straight from skops"),
    ("dereference of modified ctx ptr R6 off=88 disallowed", "sock_ops", "straight from skops"),
    ("program of this type cannot use helper bpf_tcp_sock#96", "xdp", "bpf_skc_lookup_tcp() finds"),
    ("unknown func bpf_skc_lookup_tcp#99", "sock_ops", "the socket is the context"),
])
def test_hook_aware_hints_for_socket_programs(message: str, hook: str, words: str) -> None:
    """The hints of the tcp-state lab's refusals name the fix for its hook (no compiler needed)."""
    from bpflab.explain.verifier import matching_rule

    rule, found = matching_rule(message)
    assert words in rule.hint(found, hook), rule.hint(found, hook)
