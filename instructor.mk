# The targets that check and build the course (the instructors' copy only; the student release
# leaves this file out). Included by the Makefile, whose variables it uses.
SUBMISSION ?=
SUITE ?= bookworm  # vm-smoke's guest: bookworm (Linux 6.1) or trixie (6.12)
TOOLCHAIN ?= trixie  # toolchain's root: trixie (clang 19) or bookworm (clang 14)

SERVICE ?=
TOKEN_FILE ?=

.PHONY: test grade release bench vm-smoke box vm-vagrant toolchain lint gradescope

test: provisioned ## Provision, then run the whole suite (package tests, graded references, notebooks)
	$(PY) -m pytest tests --junitxml=artifacts/junit.xml

grade: provisioned ## Grade SUBMISSION (a folder; default: LAB's reference, or its answer key) on LAB
	$(PY) -m grader grade $(SUBMISSION) --lab $(LAB) --results results.json

release: provisioned ## Build the student release (starters, handouts, public tests) in dist/student
	$(PY) -m bpflab release dist/student

bench: provisioned ## Measure the references (costs, RTTs, DNS throughput): table, bench/results/*.json and *.png
	$(PY) -m bpflab.tools.bench

vm-smoke: provisioned ## Boot a Debian guest (QEMU; SUITE=trixie for Linux 6.12) and ping the XDP echo on its virtio NIC
	$(PY) -m bpflab vm-smoke --suite $(SUITE)

box: provisioned ## Build the course's Vagrant box for libvirt (Debian 12, the playbook applied) in dist/vagrant
	$(PY) -m bpflab.tools.vm.box

vm-vagrant: provisioned ## `vagrant up` end to end in a namespace of its own (course box built if stale): bench/vm-vagrant/
	$(PY) -m bpflab.tools.vm.vagrant

toolchain: provisioned ## Grade every reference with Debian 13's clang and BCC, in a root of its own
	$(PY) -m bpflab toolchain $(TOOLCHAIN)

gradescope: provisioned ## LAB's Gradescope autograder zip: make gradescope LAB=xdp-icmp SERVICE=https://... TOKEN_FILE=...
	$(PY) -m grader gradescope $(LAB) --service $(SERVICE) --token-file $(TOKEN_FILE) $(if $(BUNDLE),--bundle-course)

lint: provisioned ## ruff on the Python, ansible-lint on the playbooks
	$(PY) -m ruff check .
	$(PY) -m ansiblelint provisioning/site.yml provisioning/grade_fleet.yml provisioning/grade_service.yml
