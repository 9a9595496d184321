# The course's commands. `make help` lists them. Every target that needs software first runs
# the project's Ansible playbook (provisioning/site.yml), the only install recipe. The targets
# that check or build the course itself are in instructor.mk, which the student release leaves
# out: there, `make help` lists only what works.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
LAB ?= hello-xdp
export ANSIBLE_CONFIG := provisioning/ansible.cfg
PLAYBOOK_VARS ?=

.PHONY: help provision lab doctor check clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

provision: ## Install everything with the project's Ansible playbook (idempotent)
	@command -v ansible-playbook >/dev/null || { apt-get update -q && apt-get install -y -q ansible-core; }
	ansible-playbook provisioning/site.yml $(PLAYBOOK_VARS)

# The labs need none of the tools that check the course itself (Vagrant, QEMU, Chromium).
lab check: PLAYBOOK_VARS += -e install_dev_tools=false

lab: provision ## Provision, then serve the course in JupyterLab on 127.0.0.1 (Ctrl-C stops it)
	$(PY) -m bpflab lab

doctor: provision ## Check this machine for what the labs need, with a fix for each problem
	$(PY) -m bpflab doctor

check: provision ## Grade your own file in labs/LAB/ (its program, or answers): make check LAB=hello-xdp
	$(PY) -m grader grade labs/$(LAB) --lab $(LAB)

clean: ## Remove every namespace a lab or grader run left behind, and build outputs
	@if [ -x $(PY) ]; then $(PY) -m bpflab cleanup --all; fi
	rm -rf dist results.json .pytest_cache

-include instructor.mk
