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

# The multihost tests' MPI transport: a second environment whose Horovod is built with MPI too
# (as the image's), made where OpenMPI is installed (.ci/run installs it).
MPI_VENV := $(if $(shell command -v mpicc 2>/dev/null),$(VENV)-mpi/.installed)
$(VENV)-mpi/.installed: pyproject.toml constraints.txt launch/install.sh
	launch/install.sh cpu-mpi $(VENV)-mpi
	touch $@

test: install $(MPI_VENV)   ## install, then lint (ruff: pyproject.toml) and run the test suite
	$(PY) -m ruff check .
	$(PY) -m pytest $(ARGS)

bench: install
	$(PY) -m distjob.bench $(ARGS)
