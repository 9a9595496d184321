"""bpflab: the course's runtime, shared by the notebooks, the CLIs and the grader.

Small modules with one job each: `labs` (manifests), `programs` (compile, load, attach),
`topology` (network namespaces joined by veth), `testrun` (BPF_PROG_TEST_RUN), `packets`
(scapy builders), `doctor` (machine checks), `starters` and `release` (student files made from
the references).
"""
