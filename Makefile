# The two commands of the README: `make demo` and `make test`. Each installs what it needs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Debian packages: nmap (the scanner's engine), chromium (report tests render the HTML headless),
# postgresql (store and multi-agent tests start a throwaway cluster with initdb/pg_ctl),
# rsyslog + rsyslog-openssl (access-log tests start a collector with a TLS input; the TLS driver is a separate package),
# logrotate (rotation tests rotate the collector's files the way a Debian host does), dcmtk + orthanc (real DICOM
# nodes that check calling AE titles, plain and over TLS), snmpd (the UDP sweep meets a real SNMP agent),
# openssh-server (a real Debian sshd banner judged end to end), nginx-light (serves recorded data-update answers).
APT_DEMO := nmap
APT_TEST := nmap chromium postgresql rsyslog rsyslog-openssl iproute2 logrotate dcmtk orthanc snmpd openssh-server nginx-light
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint unit bench apt-demo apt-test clean

define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

apt-demo:
	$(call apt_install,$(APT_DEMO))

apt-test:
	$(call apt_install,$(APT_TEST))

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,postgres]'
	touch $(STAMP)

## demo: start the loopback lab, scan it, store findings in SQLite, write the HTML report
demo: apt-demo $(STAMP)
	$(PY) -m scanner demo --workdir out/demo

## test: lint, type-check and run the whole test suite
test: apt-test $(STAMP) lint
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check scanner tests benchmarks
	$(VENV)/bin/ruff format --check scanner tests benchmarks
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## bench: TLS benchmark against bare nmap, sslyze and testssl on loopback endpoints
bench: apt-demo $(STAMP)
	bash benchmarks/setup_peers.sh
	$(PY) benchmarks/tls_bench.py

clean:
	rm -rf out .pytest_cache .mypy_cache .ruff_cache
