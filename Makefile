# Two entry points an operator needs: `make run` and `make test`.
# `make run` installs the runtime dependencies only; `make test` adds the test, bench
# and faults extras. `make install` is the documented system install (docs/operations.md).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

# make install: a venv under PREFIX, the units, sysusers/tmpfiles snippets and the docs
PREFIX ?= /opt/qssh-sidecar
UNITDIR ?= /etc/systemd/system
SYSUSERSDIR ?= /usr/lib/sysusers.d
TMPFILESDIR ?= /usr/lib/tmpfiles.d
DOCDIR ?= /usr/share/doc/qssh-sidecar

.PHONY: run test lint typecheck unit bench clean install install-units

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $(RUN_STAMP)

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,bench,faults]'
	touch $(RUN_STAMP) $(TEST_STAMP)

run: $(RUN_STAMP)
	$(BIN)/qssh-sidecar serve

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check sidecar transport hardware bench tests

typecheck: $(TEST_STAMP)
	$(BIN)/mypy

unit: $(TEST_STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test: lint typecheck unit

bench: $(TEST_STAMP)
	$(BIN)/python bench/run_all.py

install:
	$(PY) -m venv $(DESTDIR)$(PREFIX)
	$(DESTDIR)$(PREFIX)/bin/pip install -q .
	$(MAKE) install-units

# The unit names $(PREFIX)/bin/qssh-sidecar and $(DOCDIR); the shipped file holds the
# defaults, rewritten here when PREFIX or DOCDIR differ.
install-units:
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) $(DESTDIR)$(DOCDIR)
	sed -e 's|/opt/qssh-sidecar/bin/|$(PREFIX)/bin/|g' -e 's|/usr/share/doc/qssh-sidecar/|$(DOCDIR)/|g' \
	  systemd/qssh-sidecar@.service >$(DESTDIR)$(UNITDIR)/qssh-sidecar@.service
	install -m 0644 systemd/qssh-sidecar.target $(DESTDIR)$(UNITDIR)/
	install -m 0644 systemd/qssh-sidecar.sysusers.conf $(DESTDIR)$(SYSUSERSDIR)/qssh-sidecar.conf
	install -m 0644 systemd/qssh-sidecar.tmpfiles.conf $(DESTDIR)$(TMPFILESDIR)/qssh-sidecar.conf
	install -m 0644 README.md LICENSE docs/*.md $(DESTDIR)$(DOCDIR)/

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
