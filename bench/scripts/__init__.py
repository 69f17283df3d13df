"""Single-purpose benchmarks, each one script that prints numbers (JSON or a table).

Run one by path or as a module, from the repository root:

    .venv/bin/python bench/scripts/e2e_throughput.py --jobs 300 --concurrency 16
    .venv/bin/python -m bench.scripts.e2e_throughput --jobs 300 --concurrency 16

Each script's docstring gives its usage; `docs/benchmarks/README.md` has what they measured.
common.py is not a script: what e2e_throughput.py and face_detect.py share (the stack they
measure, their clients, the model counters). `dlpipe bench` (the rest of bench/) is the full comparison against the limit, the ceiling and
the peers. Nothing in the API or the workers imports these.
"""
