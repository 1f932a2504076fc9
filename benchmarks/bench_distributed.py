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

Beside wall time, every process records the *processor* time of its epochs'
batch loops (user + system: time spent waiting for a busy core is not
counted), by wrapping :meth:`trainers.training._EpochLoop.batches` -- in this
process, and in each Ray worker through a wrapper of the workers' entry point.
On a machine loaded by other jobs the wall-time ratio mixes two effects: the
work each worker is spared, and the extra scheduler share ``W`` processes get
beside everybody else's; the CPU columns separate them.  ``CPU s (sum)`` is the
whole split work (one process's, plus what splitting adds); ``CPU s (max)`` the
largest worker's share, so ``1 process CPU / max worker CPU`` is the speed-up
``W`` otherwise idle cores would give.

``--malloc retain`` runs every point (one process and the Ray workers, which
inherit the environment) with glibc told to keep freed memory
(``bench_scale.RETAIN_MALLOC``): one process's per-sample tensors at 10,000
agents and more exceed glibc's largest mmap threshold (32 MiB) and are faulted
in afresh every batch, a worker's halves of them need not be; with ``retain``
neither pays that, so the comparison isolates the split itself.

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
    python benchmarks/bench_distributed.py --agents 10000 --malloc retain
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bench_scale import RETAIN_MALLOC  # benchmarks/ (this script's directory) is on sys.path

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


def _count_cpu(record: Callable[[list[float]], None]) -> None:
    """Wrap ``_EpochLoop.batches`` in this process: each epoch's processor seconds, passed to ``record``."""
    from trainers import training

    batches, seconds = training._EpochLoop.batches, []

    def timed(self, *args, **kwargs):
        c0 = time.process_time()
        acc = batches(self, *args, **kwargs)
        seconds.append(time.process_time() - c0)
        record(seconds)
        return acc

    training._EpochLoop.batches = timed


def _timed_worker(job: dict) -> bytes | None:
    """The Ray workers' entry point (:func:`trainers.distributed._worker_main`), recording each epoch's
    processor seconds in ``$EQPM_BENCH_CPU_DIR/rank<r>.json``."""
    import torch.distributed as dist

    from trainers import distributed

    path = Path(os.environ["EQPM_BENCH_CPU_DIR"]) / f"rank{dist.get_rank()}.json"
    _count_cpu(lambda seconds: path.write_text(json.dumps(seconds)))
    return distributed._worker_main(job)


def measure(agents: int, workers: int, batches: int, estimator: str) -> dict:
    """One point, in this (fresh) process: two epochs, the second timed."""
    from trainers import distributed
    from trainers.config import TrainConfig
    from trainers.training import train

    torch.set_num_threads(1)
    os.environ["EQPM_THREADS"] = "1"
    cfg = TrainConfig(population=spec(agents), q_plus_1=20, estimator=estimator, epochs=2, max_batches=batches,
                      batch_size=128, seed=0, val_fraction=0.0)
    load = os.getloadavg()[0]
    cpu_dir = Path(tempfile.mkdtemp(prefix="eqpm-bench-cpu-"))
    os.environ["EQPM_BENCH_CPU_DIR"] = str(cpu_dir)  # Ray workers inherit the driver's environment
    t0 = time.perf_counter()
    if workers == 0:
        _count_cpu(lambda seconds: (cpu_dir / "rank0.json").write_text(json.dumps(seconds)))
        res = train(cfg, None, tensorboard=False)
    else:
        distributed._worker_main = _timed_worker  # train_distributed hands the workers this entry point
        res = distributed.train_distributed(cfg, None, workers=workers, tensorboard=False)
    total = time.perf_counter() - t0
    epoch = res.history[-1]["seconds"]
    cpu = [json.loads(f.read_text())[-1] for f in sorted(cpu_dir.glob("rank*.json"))]  # the timed epoch's
    assert len(cpu) == max(workers, 1), f"processor times of {len(cpu)} processes, expected {max(workers, 1)}"
    malloc = "retain" if all(os.environ.get(k) == v for k, v in RETAIN_MALLOC.items()) else "system"
    return {"agents": agents, "workers": workers, "malloc": malloc, "estimator": estimator, "batches": batches,
            "epoch_s": epoch, "cpu_sum_s": sum(cpu), "cpu_max_s": max(cpu), "start_s": total - epoch,
            "load_before": load, "load_after": os.getloadavg()[0], "loss": res.history[-1]["loss"]}


def run_point(agents: int, workers: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", str(agents), str(workers), "--batches", str(args.batches),
           "--estimator", args.estimator]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           **(RETAIN_MALLOC if args.malloc == "retain" else {})}
    with tempfile.TemporaryDirectory() as cwd:  # Ray's session files stay out of the checkout
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{agents} agents, {workers} workers failed (exit {proc.returncode}): {tail[:300]}")
    row = json.loads(lines[-1][len("RESULT "):])
    what = "1 process" if workers == 0 else f"{workers} workers"
    print(f"  {agents:>7,} EVs, {what:>10}, {row['malloc']} malloc: {row['epoch_s']:.2f} s/epoch ({args.batches} "
          f"batches), CPU s "
          f"{row['cpu_sum_s']:.2f} (sum), {row['cpu_max_s']:.2f} (max), start {row['start_s']:.0f} s, load "
          f"{row['load_before']:.1f} -> {row['load_after']:.1f}", flush=True)
    return row


def _read_csv(path: Path) -> list[dict]:
    with path.open() as fh:
        return [{k: v if k in ("malloc", "estimator") else int(v) if k in ("agents", "workers", "batches") else
                 float(v) for k, v in r.items()} for r in csv.DictReader(fh)]


def table(rows: list[dict]) -> str:
    out = ["| EV agents | malloc | trainer | s/epoch (median) | spread (repeats) | wall speed-up over 1 process | "
           "CPU s (sum) | CPU s (max) | CPU speed-up (1 process / max) | start s | load avg |",
           "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for agents, malloc in sorted({(r["agents"], r["malloc"]) for r in rows}):
        mine = [r for r in rows if (r["agents"], r["malloc"]) == (agents, malloc)]
        sub = {w: [r for r in mine if r["workers"] == w] for w in sorted({r["workers"] for r in mine})}
        base = statistics.median(r["epoch_s"] for r in sub[0]) if 0 in sub else None
        base_cpu = statistics.median(r["cpu_sum_s"] for r in sub[0]) if 0 in sub else None
        for w, rs in sub.items():
            e = [r["epoch_s"] for r in rs]
            med = statistics.median(e)
            cpu_sum = statistics.median(r["cpu_sum_s"] for r in rs)
            cpu_max = statistics.median(r["cpu_max_s"] for r in rs)
            speed = f"{base / med:.2f}x" if base else "-"
            cpu_speed = f"{base_cpu / cpu_max:.2f}x" if base_cpu else "-"
            loads = [x for r in rs for x in (r["load_before"], r["load_after"])]
            out.append(f"| {agents:,} | {malloc} | {'1 process' if w == 0 else f'{w} Ray Train workers'} | {med:.2f} | "
                       f"{(max(e) - min(e)) / med:.0%} ({len(e)}) | {speed} | {cpu_sum:.2f} | {cpu_max:.2f} | "
                       f"{cpu_speed} | {statistics.median(r['start_s'] for r in rs):.0f} | "
                       f"{min(loads):.1f}-{max(loads):.1f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, nargs="+", default=[20000], help="EV agents (default 20000)")
    ap.add_argument("--workers", type=int, nargs="+", default=[2], help="Ray Train worker counts (default 2)")
    ap.add_argument("--batches", type=int, default=4, help="batches of 128 per epoch (default 4)")
    ap.add_argument("--repeats", type=int, default=3, help="round-robin repeats per point (default 3)")
    ap.add_argument("--estimator", choices=("reinforce_weighted", "eq_ppo"), default="reinforce_weighted",
                    help="update rule (default reinforce_weighted, with its default difference credit)")
    ap.add_argument("--malloc", choices=("system", "retain"), default="system",
                    help="glibc's default memory handling, or keep freed memory (see above; default system)")
    ap.add_argument("--csv", type=Path, help="rows written here (default results/distributed_<malloc>.csv)")
    ap.add_argument("--report-only", action="store_true",
                    help="print the table of the rows already in results/distributed_*.csv, run nothing")
    ap.add_argument("--child", nargs=2, type=int, metavar=("AGENTS", "WORKERS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(measure(args.child[0], args.child[1], args.batches, args.estimator)))
        return
    if args.report_only:
        rows = [r for f in sorted(RESULTS.glob("distributed_*.csv")) for r in _read_csv(f)]
        print(table(rows))
        return
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, Python "
          f"{platform.python_version()}, torch {torch.__version__}; load average {os.getloadavg()[0]:.1f}; "
          f"{datetime.date.today().isoformat()}", flush=True)
    rows = []
    for _ in range(args.repeats):  # round robin: every point sees the same mix of the machine's load
        for agents in args.agents:
            for workers in (0, *args.workers):
                rows.append(run_point(agents, workers, args))
    csv_path = args.csv or RESULTS / f"distributed_{args.malloc}.csv"
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w") as fh:
        fh.write(",".join(rows[0]) + "\n")
        for r in rows:
            fh.write(",".join(str(r[k]) for k in rows[0]) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
