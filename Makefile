# keras_ln: every target bootstraps .venv itself, from nothing but python3 (and Java for H2O).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
NATIVE := $(VENV)/.native

export TF_CPP_MIN_LOG_LEVEL := 3
export PYTHONUNBUFFERED := 1

.PHONY: demo test bench install clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -c constraints.txt -e '.[h2o,test,dask]'
	touch $(STAMP)

# The native recurrent kernels (C++, against the installed TensorFlow). A failed
# build is not fatal: the layers then use their pure-TensorFlow paths.
$(NATIVE): $(STAMP) $(wildcard keras_ln/layers/_native/*.cc keras_ln/layers/_native/*.h) keras_ln/layers/_native/__init__.py
	$(PY) -m keras_ln.layers._native || echo "keras_ln: continuing without the native ops"
	touch $(NATIVE)

install: $(STAMP) $(NATIVE)

# keras_ln AutoML vs H2O AutoML on a tabular and a sequence set: < 10 minutes on 2 cores
# (9.5 min measured with the claims, the machine otherwise lightly loaded).
# Only time budgets, the same for both sides (90 s and 120 s each, no new model after
# them), no model count and no epoch cap: the nets train up to the CLI's default
# max_iter, the portfolio's configurations first, then Optuna's. Then the claims made
# for layer normalization, measured within 30 s each.
demo: $(STAMP) $(NATIVE)
	$(PY) -m integrations.h2o_automl --dataset breast_cancer --max-runtime-secs 90 --nfolds 5 --claims --claims-secs 30
	$(PY) -m integrations.h2o_automl --dataset sequential_digits --max-runtime-secs 120 --nfolds 3 --claims --claims-secs 30
	@echo "Reports: reports/breast_cancer/report.md and reports/sequential_digits/report.md"

test: $(STAMP) $(NATIVE)
	KERAS_LN_REQUIRE_NATIVE=1 $(PY) -m pytest tests

bench: $(STAMP) $(NATIVE)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) reports build *.egg-info .pytest_cache keras_ln/layers/_native/*.so
