"""Data-parallel training over agent shards: the speed-up of W Ray Train workers over one process (issue 14).

The population is the ``ev-similar`` preset's 70 EVs tiled to ``--agents``
(agent ``j`` has preset EV ``j mod 70``'s energy needs and charging rates;
:class:`TiledEVs`, given to the trainer as a population spec so that every Ray
worker builds the same population), on the preset's signal, shared layout,
no validation split.  There regret evaluation -- every agent's top-k charging
schedule and its hindsight optimum -- is most of a batch's work, which is what
agent shards split.  Settings: ``reinforce_weighted`` (``--estimator``),
q + 1 = 20, K = 1, batch 128, ``--batches`` batches per epoch, two epochs; the
first warms up and the second's wall time (``seconds`` in ``metrics.csv``,
measured by rank 0, so it includes the all-reduces) is the measurement.

Points, each in a fresh child process and run round robin ``--repeats`` times
(median reported, with the spread): ``1 process`` (:func:`trainers.training.train`),
and ``W workers`` (:func:`trainers.distributed.train_distributed` on a local Ray
instance, one CPU and one torch thread per worker).  ``start s`` is the rest of
the child's wall time: Ray's start, the workers' imports and population
builds, the first epoch -- a fixed cost that long runs amortise.  The machine's
load average is recorded with every point: the 2 cores here are shared, and W
workers only help when W cores are free.

    python benchmarks/bench_distributed.py                          # 20,000 EVs, 1 process vs 2 workers
    python benchmarks/bench_distributed.py --agents 5000 20000 --workers 1 2 --repeats 3
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from agents.ev_charging import EVChargingAgent
from eq_envs.presets import build_population

RESULTS = Path(__file__).parent / "results"


class TiledEVs(EVChargingAgent):
    """``agents`` EVs: the ``ev-similar`` preset's 70 (needs and charging rates of ``split``) tiled."""

    def __init__(self, agents: int, horizon: int = 12, split: str = "train") -> None:
        base = build_population("ev-similar", split=split, layout="shared", val_fraction=0.0).groups[0]
        assert isinstance(base, EVChargingAgent)
        tile = [j % base.num_agents for j in range(int(agents))]
        rates = base.rate.sequences()
        super().__init__([base.needs[j] for j in tile], [rates[j] for j in tile], horizon=horizon)


def spec(agents: int) -> dict:
    """The tiled population as a population spec (the trainer's workers build it from the run's config)."""
    return {"name": f"ev-similar-x{agents}", "horizon": 12, "layout": "shared",
            "signal": {"region": "CISO", "name": "combined"},
            "groups": [{"class": f"{Path(__file__).resolve()}:TiledEVs", "args": {"agents": agents}}]}


def measure(agents: int, workers: int, batches: int, estimator: str) -> dict:
    """One point, in this (fresh) process: two epochs, the second timed."""
    from trainers.config import TrainConfig
    from trainers.distributed import train_distributed
    from trainers.training import train

    torch.set_num_threads(1)
    os.environ["EQPM_THREADS"] = "1"
    cfg = TrainConfig(population=spec(agents), q_plus_1=20, estimator=estimator, epochs=2, max_batches=batches,
                      batch_size=128, seed=0, val_fraction=0.0)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    if workers == 0:
        res = train(cfg, None, tensorboard=False)
    else:
        res = train_distributed(cfg, None, workers=workers, tensorboard=False)
    total = time.perf_counter() - t0
    epoch = res.history[-1]["seconds"]
    return {"agents": agents, "workers": workers, "estimator": estimator, "batches": batches,
            "epoch_s": epoch, "start_s": total - epoch, "load_before": load, "load_after": os.getloadavg()[0],
            "loss": res.history[-1]["loss"]}


def run_point(agents: int, workers: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", str(agents), str(workers), "--batches", str(args.batches),
           "--estimator", args.estimator]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with tempfile.TemporaryDirectory() as cwd:  # Ray's session files stay out of the checkout
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{agents} agents, {workers} workers failed (exit {proc.returncode}): {tail[:300]}")
    row = json.loads(lines[-1][len("RESULT "):])
    what = "1 process" if workers == 0 else f"{workers} workers"
    print(f"  {agents:>7,} EVs, {what:>10}: {row['epoch_s']:.2f} s/epoch ({args.batches} batches), start "
          f"{row['start_s']:.0f} s, load {row['load_before']:.1f} -> {row['load_after']:.1f}", flush=True)
    return row


def table(rows: list[dict]) -> str:
    out = ["| EV agents | trainer | s/epoch (median) | spread | speed-up over 1 process | start s | load avg |",
           "|---:|---|---:|---:|---:|---:|---:|"]
    for agents in sorted({r["agents"] for r in rows}):
        sub = {w: [r for r in rows if r["agents"] == agents and r["workers"] == w]
               for w in sorted({r["workers"] for r in rows if r["agents"] == agents})}
        base = statistics.median(r["epoch_s"] for r in sub[0]) if 0 in sub else None
        for w, rs in sub.items():
            e = [r["epoch_s"] for r in rs]
            med = statistics.median(e)
            speed = f"{base / med:.2f}x" if base else "-"
            loads = [x for r in rs for x in (r["load_before"], r["load_after"])]
            out.append(f"| {agents:,} | {'1 process' if w == 0 else f'{w} Ray Train workers'} | {med:.2f} | "
                       f"{(max(e) - min(e)) / med:.0%} ({len(e)}) | {speed} | "
                       f"{statistics.median(r['start_s'] for r in rs):.0f} | {min(loads):.1f}-{max(loads):.1f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, nargs="+", default=[20000], help="EV agents (default 20000)")
    ap.add_argument("--workers", type=int, nargs="+", default=[2], help="Ray Train worker counts (default 2)")
    ap.add_argument("--batches", type=int, default=4, help="batches of 128 per epoch (default 4)")
    ap.add_argument("--repeats", type=int, default=3, help="round-robin repeats per point (default 3)")
    ap.add_argument("--estimator", choices=("reinforce_weighted", "eq_ppo"), default="reinforce_weighted",
                    help="update rule (default reinforce_weighted, with its default difference credit)")
    ap.add_argument("--csv", type=Path, default=RESULTS / "distributed.csv")
    ap.add_argument("--child", nargs=2, type=int, metavar=("AGENTS", "WORKERS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(measure(args.child[0], args.child[1], args.batches, args.estimator)))
        return
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, Python "
          f"{platform.python_version()}, torch {torch.__version__}; load average {os.getloadavg()[0]:.1f}; "
          f"{datetime.date.today().isoformat()}", flush=True)
    rows = []
    for _ in range(args.repeats):  # round robin: every point sees the same mix of the machine's load
        for agents in args.agents:
            for workers in (0, *args.workers):
                rows.append(run_point(agents, workers, args))
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with args.csv.open("w") as fh:
        fh.write(",".join(rows[0]) + "\n")
        for r in rows:
            fh.write(",".join(str(r[k]) for k in rows[0]) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
