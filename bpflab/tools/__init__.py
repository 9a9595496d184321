"""Instructor tools: the benchmark, the VM smoke test, the toolchain roots, the doctor, JupyterLab."""

# The Debian releases the course supports (the playbook, the toolchain roots, vm-smoke's guests),
# with the kernel each one ships.
SUITES = {"bookworm": "Debian 12, Linux 6.1", "trixie": "Debian 13, Linux 6.12"}
