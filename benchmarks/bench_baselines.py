"""Issue 9's fair benchmark: the calls of ``eqpm benchmark`` (trainers/benchmark.py) behind BENCHMARKS.md.

Parts (each one ``eqpm benchmark`` call with its own output directory under
``benchmarks/results/baselines/``; the finished runs go to its ``runs/``,
which git does not track):

* ``shared`` -- ``ev-similar`` and ``ev-different`` (70 EVs, true top-k
  regret, horizon 12) in the shared layout (one public input per hour for
  every agent: the paper's, and ``PublicModel-v0``'s default); 2,000,000
  agent-decisions per run; the full grid (6 points: a third of each method's
  default learning rate, the default and 3x, times two batch-like sizes).
* ``chunked`` -- the same populations in the chunked layout (each agent its
  own stretch of time); 1,000,000 agent-decisions and the 2-point grid
  (``--quick``'s grid: the default learning rate and 3x) for every method,
  because a chunked run costs several times a shared one on this machine.
* ``sac`` -- SB3 SAC (utilitarian reward) on the shared EV settings, 2,000,000
  agent-decisions, with the 2-point grid: a SAC run costs 7-16 min here, so the
  6-point grid of the ``shared`` part did not fit; SAC got less tuning than the
  methods of that part, which can only flatter the others.
* ``revin`` -- the ``shared`` part's EV settings and 6-point grid for ``eq_ppo``
  and the Plain PM with the window-normalised public model (``input_norm="window"``,
  RevIN; ``benchmarks/bench_input_norm.py``): does a model that sees each window
  standardised carry what it learnt to the later months?  With SB3 PPO (util and
  equitable) through the same normalisation (``WindowNormalizeWrapper``), the
  like-for-like baseline.
* ``timing`` -- ``ev-different`` shared only: ``eq_ppo`` with the window-normalised
  model and SB3 ``PPO util`` on the raw window, in one call so that both are
  timed under the same load (issue 9's wall-time target).
* ``tradeoff`` -- the main job's population, ``ev-home-slots`` on ERCOT (10 EVs
  needing different numbers of hours; agents that keep their identity across
  splits), shared layout, window-normalised model, ``eq_ppo``, the Plain PM and
  SB3 PPO (util, equitable; raw window), 300,000 agent-decisions (30,000 clock
  positions, about the EV parts').
* ``dc`` -- data centers (``dc-different-different-lambda``, shared layout,
  q + 1 = 3), ``eq_ppo`` against ``pathwise`` and the Plain PM: does the new
  rule match the pathwise gradient where one exists?

Every part: q + 1 = 20 for EVs (the equitable methods and the selection
criterion); the public model of ours, the Plain PM, SPO+ and PFYL is an MLP
with hidden layers 64, 64 (``--model``); methods: our ``eq_ppo``,
``eq_ppo+mse`` (shared only) and ``reinforce_weighted``, the Plain PM
(``mse``), SB3 ``PPO util``, ``PPO equitable`` and ``A2C util`` on
``PublicModelEnv``, and the decision-focused ``SPO+`` and ``PFYL`` (PyEPO).
SAC has its own part (``sac``) and is not in the chunked one (34-89 min a run there).
Grid points run on tuning seed 100 and are chosen on the validation split by
the norm-form Equitable Objective at q + 1; the chosen point runs on seeds
0 1 2, each run's checkpoint chosen on validation; held-out test metrics at
equal agent-decisions and at equal inputs. Runs are resumable (finished ones
are skipped) and run on local Ray (``--address`` for a cluster).

    python benchmarks/bench_baselines.py                  # every part (hours on 2 cores; BENCHMARKS.md)
    python benchmarks/bench_baselines.py shared           # one part
    python benchmarks/bench_baselines.py --quick          # smoke run of the EV settings (~2 min)
    python benchmarks/bench_baselines.py --report-only    # rebuild the tables from the finished runs

Extra arguments (``--backend``, ``--address``, ``--num-cpus``, ``--report-only``)
are passed to ``eqpm benchmark``. After the parts, the EV parts' per-run rows
are gathered into ``benchmarks/results/baselines_runs.csv`` (one row per
reported run: population, layout, method, seed, counts, held-out metrics).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from trainers.cli import main

RESULTS = Path("benchmarks/results")
MODEL = ["--model", '{"backbone": "mlp", "backbone_kwargs": {"hidden": [64, 64]}}']
REVIN = '{"backbone": "mlp", "backbone_kwargs": {"hidden": [64, 64]}, "input_norm": "window"}'
EV = ["--population", "ev-similar", "ev-different", "--q-plus-1", "20", *MODEL, "--seeds", "0", "1", "2"]
EV_METHODS = ["eq_ppo", "reinforce_weighted", "mse", "PPO util", "PPO equitable", "A2C util", "SPO+", "PFYL"]
PARTS = {
    "shared": [*EV, "--layout", "shared", "--budget", "2000000", "--methods", *EV_METHODS, "eq_ppo+mse"],
    "chunked": [*EV, "--layout", "chunked", "--budget", "1000000", "--checkpoints", "6", "--quick",
                "--methods", *EV_METHODS],
    "sac": [*EV, "--layout", "shared", "--budget", "2000000", "--checkpoints", "6", "--quick", "--methods", "SAC util"],
    # our public model with window normalisation (input_norm="window", RevIN) for every method that trains it, and
    # SB3 PPO through the same normalisation as an env wrapper (eq_envs.sb3_env.WindowNormalizeWrapper)
    "revin": ["--population", "ev-similar", "ev-different", "--q-plus-1", "20", "--model", REVIN, "--seeds", "0", "1",
              "2", "--layout", "shared", "--budget", "2000000", "--methods", "eq_ppo", "mse", "PPO util (window)",
              "PPO equitable (window)"],
    # issue 9's wall-time target on ev-different shared, timed in one call (same load): our best model and rule
    # against SB3 PPO on the raw window, its better input (BENCHMARKS.md, the revin part)
    "timing": ["--population", "ev-different", "--q-plus-1", "20", "--model", REVIN, "--seeds", "0", "1", "2",
               "--layout", "shared", "--budget", "2000000", "--methods", "eq_ppo", "PPO util"],
    # the main job's population (a real trade-off whose agents keep their identity across splits): does the
    # equitable rule beat the Plain PM and PPO there? 300,000 decisions = 30,000 clock positions of its 10 agents,
    # about the EV parts' positions
    "tradeoff": ["--population", "ev-home-slots", "--region", "ERCO", "--q-plus-1", "20", "--model", REVIN,
                 "--seeds", "0", "1", "2", "--layout", "shared", "--budget", "300000", "--methods", "eq_ppo", "mse",
                 "PPO util", "PPO equitable"],
    "dc": ["--population", "dc-different-different-lambda", "--layout", "shared", "--q-plus-1", "3", *MODEL,
           "--budget", "2000000", "--seeds", "0", "1", "2", "--methods", "eq_ppo", "pathwise", "mse"],
}
QUICK = ["--population", "ev-similar", "ev-different", "--layout", "shared", "chunked", "--methods", "eq_ppo",
         "mse", "PPO util", "SPO+", "--quick", "--out", "runs/bench-baselines-quick"]


def command(part: str, extra: list[str]) -> list[str]:
    """The ``eqpm benchmark`` command line of one part."""
    return ["benchmark", *PARTS[part], "--out", str(RESULTS / "baselines" / part), *extra]


def gather() -> Path | None:
    """The EV parts' per-run rows in one CSV (``None`` if no part has finished runs)."""
    frames = [pd.read_csv(p) for part in ("shared", "chunked", "sac")
              if (p := RESULTS / "baselines" / part / "baselines_runs.csv").exists()]
    if not frames:
        return None
    out = RESULTS / "baselines_runs.csv"
    pd.concat(frames, ignore_index=True).to_csv(out, index=False)
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    if "--quick" in args:
        sys.exit(main(["benchmark", *QUICK, *(a for a in args if a != "--quick")]))
    parts = [a for a in args if a in PARTS] or list(PARTS)
    extra = [a for a in args if a not in PARTS]
    for part in parts:
        code = main(command(part, extra))
        if code:
            sys.exit(code)
    print(f"per-run rows of the EV parts: {gather()}")
