# Two commands on a fresh machine:  `make train`  and  `make test`.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install train test bench
install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml constraints.txt launch/install.sh
	launch/install.sh cpu $(VENV)
	touch $@

train: install   ## install, then train end to end on one CPU (generated data, real GloVe)
	$(PY) -m distjob.train --test-mode $(ARGS)

test: install    ## install, then run the test suite
	$(PY) -m pytest $(ARGS)

bench: install
	$(PY) -m distjob.bench $(ARGS)
