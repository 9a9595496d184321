"""Instructor tools: the benchmark, the VM smoke test, the toolchain roots, the doctor, JupyterLab."""
