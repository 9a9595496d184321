# The course's commands. `make help` lists them. Every target that needs software first runs
# the project's Ansible playbook (provisioning/site.yml), the only install recipe.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
LAB ?= hello-xdp
SUBMISSION ?=
export ANSIBLE_CONFIG := provisioning/ansible.cfg
PLAYBOOK_VARS ?=

.PHONY: help provision lab test doctor grade check release lint clean vm-smoke bench

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

provision: ## Install everything with the project's Ansible playbook (idempotent)
	@command -v ansible-playbook >/dev/null || { apt-get update -q && apt-get install -y -q ansible-core; }
	ansible-playbook provisioning/site.yml $(PLAYBOOK_VARS)

# The labs need none of the tools that check the course itself (Vagrant, QEMU, Chromium).
lab check: PLAYBOOK_VARS += -e install_dev_tools=false

lab: provision ## Provision, then serve the course in JupyterLab on 127.0.0.1 (Ctrl-C stops it)
	$(PY) -m bpflab lab

test: provision ## Provision, then run the whole suite (package tests, graded references, notebooks)
	$(PY) -m pytest tests --junitxml=artifacts/junit.xml

doctor: provision ## Check this machine for what the labs need, with a fix for each problem
	$(PY) -m bpflab doctor

grade: provision ## Grade SUBMISSION (a folder; default: LAB's reference, or its answer key) on LAB
	$(PY) -m grader grade $(SUBMISSION) --lab $(LAB) --results results.json

check: provision ## Grade your own file in labs/LAB/ (its program, or answers): make check LAB=hello-xdp
	$(PY) -m grader grade labs/$(LAB) --lab $(LAB)

release: provision ## Build the student release (starters, handouts, public tests) in dist/student
	$(PY) -m bpflab release dist/student

bench: provision ## Measure the references (costs, RTTs, DNS throughput): table, bench/results/*.json and *.png
	$(PY) -m bpflab.bench

vm-smoke: provision ## Boot a Debian guest (QEMU) and ping the XDP echo natively attached to its virtio NIC
	$(PY) -m bpflab vm-smoke

lint: provision ## ruff on the Python, ansible-lint on the playbook
	$(PY) -m ruff check .
	$(PY) -m ansiblelint provisioning/site.yml

clean: ## Remove every namespace a lab or grader run left behind, and build outputs
	@if [ -x $(PY) ]; then $(PY) -m bpflab cleanup --all; fi
	rm -rf dist results.json .pytest_cache
