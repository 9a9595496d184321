"""Lab 2, tc-icmp: the ping server at TC ingress. The tests and their points are in
echo_suite.py, shared with the XDP lab: the behaviour graded is the same at both hooks."""

from echo_suite import *  # noqa: F403

LAB = "tc-icmp"
