# The course's commands. `make help` lists them. Every target that needs software first makes
# sure the project's Ansible playbook (provisioning/site.yml), the only install recipe, has run
# with today's inputs: provisioning/stamp.py checks that in milliseconds, and the playbook runs
# only when something changed (the course, the pins, the kernel) or never ran. The targets
# that check or build the course itself are in instructor.mk, which the student release leaves
# out: there, `make help` lists only what works.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
LAB ?= hello-xdp
export ANSIBLE_CONFIG := provisioning/ansible.cfg
PLAYBOOK_VARS ?=

.PHONY: help provision provisioned lab doctor check clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

provision: ## Install everything with the project's Ansible playbook (idempotent; runs even if nothing changed)
	@command -v ansible-playbook >/dev/null || { apt-get update -q && apt-get install -y -q ansible-core; }
	ansible-playbook provisioning/site.yml $(PLAYBOOK_VARS)

# A full provision (make test, make provision) also covers the labs' narrower one.
provisioned:
	@python3 provisioning/stamp.py check $(PLAYBOOK_VARS) 2>/dev/null \
		|| $(MAKE) --no-print-directory provision PLAYBOOK_VARS="$(PLAYBOOK_VARS)"

# The labs need none of the tools that check the course itself (Vagrant, QEMU, Chromium).
lab check doctor: PLAYBOOK_VARS += -e install_dev_tools=false

lab: provisioned ## Provision, then serve the course in JupyterLab on 127.0.0.1 (Ctrl-C stops it)
	$(PY) -m bpflab lab

doctor: provisioned ## Check this machine for what the labs need, with a fix for each problem
	$(PY) -m bpflab doctor

check: provisioned ## Grade your own file in labs/LAB/ (its program, or answers): make check LAB=hello-xdp
	$(PY) -m grader grade labs/$(LAB) --lab $(LAB)

clean: ## Remove what killed lab or grader runs left behind (namespaces), and results.json
	@if [ -x $(PY) ]; then $(PY) -m bpflab cleanup; fi
	rm -rf results.json .pytest_cache

-include instructor.mk
