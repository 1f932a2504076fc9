"""Issue 9's fair benchmark on the four EV settings: one call of ``eqpm benchmark`` (trainers/benchmark.py).

Settings: ``ev-similar`` and ``ev-different`` (70 EVs, true top-k regret,
horizon 12), each in the shared layout (one public input per hour for every
agent: the paper's, and ``PublicModel-v0``'s default) and the chunked one
(each agent its own stretch of time); q + 1 = 20 for every equitable method
and for the selection criterion.  Methods: our ``eq_ppo`` and
``reinforce_weighted``, the Plain PM (``mse``), SB3 ``PPO util``,
``PPO equitable``, ``A2C util`` and ``SAC util`` on ``PublicModelEnv``, and the
decision-focused ``SPO+`` and ``PFYL`` (PyEPO) on the same public model as ours.

Protocol (the engine's module docstring has it in full): 2,000,000
agent-decisions per run; the same grid for every method (its default
learning rate and 3x, times two batch-like sizes), run on tuning seed 100
and chosen on the validation split by the norm-form Equitable Objective at
q + 1 of the per-agent regrets; the chosen point on seeds 0 1 2, each run's
checkpoint chosen on validation; held-out test metrics at equal
agent-decisions and at equal inputs; learning curves against decisions,
positions and wall time.  Runs are resumable (finished ones are skipped) and
run on local Ray (``--address`` for a cluster).

    python benchmarks/bench_baselines.py                 # the full benchmark (hours; see BENCHMARKS.md)
    python benchmarks/bench_baselines.py --quick         # smoke run into runs/bench-baselines-quick (~6 min)
    python benchmarks/bench_baselines.py --report-only   # rebuild the tables from the finished runs

Extra arguments (``--backend``, ``--address``, ``--num-cpus``, ``--report-only``)
are passed to ``eqpm benchmark``.  Writes ``benchmarks/results/baselines*.{csv,md,png}``
(the runs themselves under ``benchmarks/results/runs/``, not tracked by git).
"""
from __future__ import annotations

import sys

from trainers.cli import main

SETTINGS = ["--population", "ev-similar", "ev-different", "--layout", "shared", "chunked", "--q-plus-1", "20"]
METHODS = ["eq_ppo", "reinforce_weighted", "mse", "PPO util", "PPO equitable", "A2C util", "SAC util", "SPO+", "PFYL"]
FULL = ["--budget", "2000000", "--seeds", "0", "1", "2", "--out", "benchmarks/results"]
QUICK = ["--quick", "--out", "runs/bench-baselines-quick"]


def command(extra: list[str]) -> list[str]:
    """The ``eqpm benchmark`` command line (``--quick`` in ``extra``: the smoke run)."""
    quick = "--quick" in extra
    rest = [a for a in extra if a != "--quick"]
    return ["benchmark", *SETTINGS, "--methods", *METHODS, *(QUICK if quick else FULL), *rest]


if __name__ == "__main__":
    sys.exit(main(command(sys.argv[1:])))
