"""The grading service's defaults, shared by its modules and the CLI that parses its options.

Here, apart, because `python -m grader grade` (a student's `make check`) parses the service's
options too, and must not pay for importing FastAPI and RQ (0.3 s) on every check.
"""

BROKER_ENV = "BPFLAB_BROKER_URL"  # where workers find the broker's URL (a password must not be in argv)
PORT = 8740
RATE_LIMIT, RATE_WINDOW = 12, 600  # submissions per student per window (s): one every ~50 s
