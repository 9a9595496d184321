"""The course's autograder: pytest suites per lab, scored with points, reported for Gradescope."""
