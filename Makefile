# kubeplane: `make demo` and `make test` work as root on a fresh Debian 12 / Ubuntu 24.04 machine.
# Both install what is missing (system packages with apt-get, then the .venv), then run.

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Tools the lab and the proxies drive inside network namespaces, plus what the tests use as real clients.
SYSTEM_PACKAGES := iproute2 iptables nftables conntrack ipset ipvsadm dnsutils curl util-linux procps \
	python3-venv user-mode-linux kmod
BENCH_PACKAGES := dnsperf unbound

.PHONY: demo test unit integration ipvs lint bench system-deps clean

system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing system packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: pyproject.toml | system-deps
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

demo: system-deps $(VENV)/.installed
	$(PY) examples/demo.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check kubeplane tests bench examples
	$(VENV)/bin/ruff format --check kubeplane tests bench examples
	$(VENV)/bin/mypy

unit: $(VENV)/.installed
	$(VENV)/bin/pytest tests/unit -q

integration: system-deps $(VENV)/.installed
	$(VENV)/bin/pytest tests/integration -q --ignore=tests/integration/ipvs

# kube-proxy's IPVS mode needs a kernel with IP_VS: the tests run inside a user-mode Linux kernel.
ipvs: system-deps $(VENV)/.installed
	$(PY) tests/uml/run.py -- $(VENV)/bin/pytest tests/integration/ipvs -q

test: lint unit integration ipvs

bench: system-deps $(VENV)/.installed
	@missing=$$(for p in $(BENCH_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi
	for b in bench/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
