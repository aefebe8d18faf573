# The two commands: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FUNNEL := $(VENV)/bin/funnel


.PHONY: test-chaos soak
.PHONY: run test lint format unit integration stack-up stack-down stack-status install clean bench bench-quick bench-profile bench-decode bench-replay bench-scale bench-peer bench-latency bench-backlog bench-collector k8s-check

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

## make run: stack up, worker, demo traffic, page on http://127.0.0.1:6066 (Ctrl-C stops worker+demo)
run: install
	$(FUNNEL) run

## make test: lint, then every test (unit, property, integration against the real stack);
## the slowest 25 listed at the end (the suite must stay well under 30 minutes on 2 cores)
test: install lint
	$(PY) -m pytest -m "not slow" --durations=25

## make test-chaos: the chaos suite at soak size (60k events, 8 kills, 60 s outages)
## plus five more SIGKILL rounds; make test runs the bounded suite
test-chaos: install
	FUNNEL_CHAOS_SOAK=1 $(PY) -m pytest tests/chaos
	$(PY) -m pytest -m slow

## make soak [SCENARIO=join_and_leave] [RUNS=10]: one chaos scenario N times in a loop;
## prints runs/passed, lost, double-counted, crashes restarted and the worst recovery
SCENARIO ?= join_and_leave
RUNS ?= 10
soak: install
	$(PY) -m tests.chaos.soak -k $(SCENARIO) -n $(RUNS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

unit: install
	$(PY) -m pytest tests/unit

integration: install
	$(PY) -m pytest -m integration

## make k8s-check: render deploy/k8s with kustomize, validate with kubeconform (strict)
k8s-check: install
	PYTHON=$(CURDIR)/$(PY) bash deploy/k8s/validate.sh

stack-up: install
	$(FUNNEL) stack up

stack-down: install
	$(FUNNEL) stack down

stack-status: install
	$(FUNNEL) stack status

## benchmarks (results in bench/results/*.json; the dev stack is started if needed)
## make bench: throughput (1M events: raw consumer, replay, 1 and 2 workers, Quix Streams peers),
## latency at 1k and 5k events/s, state cost and recovery of 1M journeys; summary table
bench: install
	$(PY) -m bench

## make bench-quick: the same at 50k events (results in bench/results/quick/)
bench-quick: install
	$(PY) -m bench --quick

## make bench-profile: py-spy of one worker's throughput run and of a recovery
bench-profile: install
	$(PY) -m bench.scale --events $(BENCH_EVENTS) --workers 1 --profile profile-throughput
	$(PY) -m bench.recovery --journeys 100000 --profile profile-recovery

bench-decode: install
	$(PY) -m bench.decode

## make bench-replay: the engine alone (funnel replay of the bench log), best and median of 5 runs
bench-replay: install
	$(PY) -m bench.replay

## make bench-collector: the HTTP collector vs a raw producer, and its latency at 5k events/s
bench-collector: install
	PYTHONPATH=. $(PY) -m bench.collector

## make bench-scale [BENCH_EVENTS=200000]: 1, 2, 3 workers vs a raw consumer (dev stack)
BENCH_EVENTS ?= 200000
bench-scale: install
	$(PY) -m bench.scale --events $(BENCH_EVENTS)

## make bench-peer: one and two workers vs the Quix Streams peers (the same job with our engine,
## and counting only), replay and the raw consumer, same run
bench-peer: install
	$(PY) -m bench.scale --events $(BENCH_EVENTS) --workers 1,2 --peer

## make bench-backlog [BACKLOG_EVENTS=1000000]: days of all event types produced at once,
## one worker: time, peak memory, longest commit gap, API == replay (dev stack)
BACKLOG_EVENTS ?= 1000000
bench-backlog: install
	$(PY) -m bench.backlog --events $(BACKLOG_EVENTS)

## make bench-latency: produce -> visible in the API at 500, 1000, 5000 events/s (dev stack)
bench-latency: install
	$(PY) -m bench.latency

clean: stack-down
	rm -rf .run
