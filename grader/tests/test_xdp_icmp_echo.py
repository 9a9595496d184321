"""Lab 1, xdp-icmp: a ping server in the driver hook. The tests and their points are in
echo_suite.py, shared with the TC lab: the behaviour graded is the same at both hooks."""

from echo_suite import *  # noqa: F403

LAB = "xdp-icmp"
