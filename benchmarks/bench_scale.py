"""Scaling with the number of agents: seconds per epoch and peak memory, 50 to 500,000 agents (issue 14).

Populations are the presets' agents tiled on the preset's training split
(agent ``j`` is preset agent ``j mod n`` with its own contexts; no validation
part held out): data centers from ``dc-different-different-lambda`` (50
agents, pathwise estimator) and EVs from ``ev-similar`` (70 agents,
``reinforce_weighted`` with the difference credit and the deterministic
baseline), q + 1 = 20, K = 1, batch 128, Adam -- what ``eqpm train`` runs,
through :func:`trainers.training.train` itself (``train`` builds its
population from the configuration, so the child process hands it the tiled
one by patching ``TrainConfig.build_population``).  The chunked layout gives
every agent an equal stretch of the split's positions, so it holds at most as
many agents as there are positions (EVs 6,109, data centers 5,857); an epoch
then scores every position once, each with its own input.

Every configuration runs in its own child process (peak memory is the child's
``ru_maxrss``, so runs do not pollute each other), which trains one epoch of
``n`` batches to warm up and then a second, timed one.  With the whole epoch
timed ``s/epoch`` is measured; otherwise it is ``s/batch`` times the batches
of a full epoch (column ``timed``).  Both wall time (``train``'s own epoch
time) and processor time (user + system of the child, one thread by default)
are recorded: the machine is shared, and processor time does not count the
time a busy core makes the run wait, so the per-decision costs and the time
exponents use it.  One agent-decision is one agent scored on one sampled
prediction (K = 1: agents x clock positions); the deterministic baseline's
extra evaluation is not counted.  ``net`` is the share of a batch's processor
time spent in the public model's forward and backward on that batch's input
(timed separately) -- in the chunked layout every agent has its own input, so
the network runs on ``M x B`` sequences and dominates.  With ``--repeats`` the
points run round robin and the table keeps each point's median repeat (the
faster of two).  A child gets an address-space cap (``--memory-limit-gb``) so
a point that does not fit fails on its own instead of starving the shared
machine.

Growth exponents are least-squares slopes of log(s/epoch) and log(peak memory
above the interpreter's) against log(agents), per layout and batch size, over
the points with at least 500 agents.  Part two is the memory model of the
regret fast path (:meth:`eq_envs.population.Population.regret`): peak bytes
of tensors allocated per agent-decision (torch profiler), unsharded and under
shard budgets of 256 MiB and 32 MiB (the default).

Results accumulate in ``benchmarks/results/scale.csv`` (a row per
configuration, replaced when re-measured) and the table in ``scale.md`` is
rebuilt from it, so the big points can be run separately:

    python benchmarks/bench_scale.py            # 50, 500, 5,000 agents: ~15 min on 2 busy cores
    python benchmarks/bench_scale.py --agents 50000 100000 --layouts shared --batches 3 --no-fast-path
    python benchmarks/bench_scale.py --agents 50000 500000 --layouts shared --batch-size 16 --batches 2 \
        --no-fast-path                          # 500,000 agents: batch 128 would need ~26 GB
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from agents.data_center import DataCenterAgent
from agents.ev_charging import EVChargingAgent
from eq_envs.population import Population
from eq_envs.presets import build_population

PRESET = {"dc": "dc-different-different-lambda", "ev": "ev-similar"}
Q = 19.0  # q + 1 = 20, the paper's EV setting; the pathwise data-center cost does not depend on q
RESULTS = Path(__file__).parent / "results"
#: glibc settings of ``--malloc retain``: never hand big blocks to mmap, never trim the heap, so memory a
#: batch frees is reused by the next instead of being returned to the kernel and faulted in again.
RETAIN_MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40)}
FIELDS = ("kind", "layout", "agents", "batch_size", "threads", "malloc", "estimator", "batches_per_epoch", "timed_batches",
          "s_per_batch", "s_per_epoch", "cpu_s_per_epoch", "us_per_decision", "net_share", "rss_start_gb", "rss_built_gb",
          "peak_rss_gb", "bytes_per_decision", "repeats", "spread", "load_avg", "status", "date")


# --------------------------------------------------------------------------- tiled populations
def tiled_population(kind: str, layout: str, num_agents: int) -> Population:
    """The preset's agents tiled to ``num_agents`` on its training split (no validation part held out)."""
    base = build_population(PRESET[kind], split="train", layout="shared", val_fraction=0.0)
    g = base.groups[0]
    tile = [j % g.num_agents for j in range(num_agents)]
    if kind == "ev":
        rates = g.rate.sequences()
        group = EVChargingAgent([g.needs[j] for j in tile], [rates[j] for j in tile], horizon=g.horizon)
    else:
        work = g.workloads.sequences()
        group = DataCenterAgent([work[j] for j in tile], lam=g.lam[tile], horizon=g.horizon, reduce=g.reduce)
    return Population(f"{base.name}-x{num_agents}", base.signal, "train", base.split_range, [group], base.horizon,
                      layout=layout, positions=base.positions, protocol=base.protocol, signal_name=base.signal_name,
                      units=base.units)


def train_positions(kind: str) -> int:
    """Clock positions of the preset's training split: the most agents the chunked layout can hold."""
    return build_population(PRESET[kind], split="train", layout="shared", val_fraction=0.0).num_steps


# --------------------------------------------------------------------------- one configuration (child process)
def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: kB


def _malloc_setting() -> str:
    """``--malloc`` of this child, read back from its environment."""
    return "retain" if all(os.environ.get(k) == v for k, v in RETAIN_MALLOC.items()) else "system"


def _cpu_seconds(fn) -> float:
    """Processor time of ``fn()`` (user + system of this process: waiting for a busy core is not counted)."""
    c0 = time.process_time()
    fn()
    return time.process_time() - c0


def measure(kind: str, layout: str, num_agents: int, batches: int, batch_size: int, threads: int) -> dict:
    """Train one epoch of ``batches`` batches to warm up, then time a second run.  Runs in a fresh process."""
    from trainers import training
    from trainers.config import TrainConfig

    torch.set_num_threads(threads)
    row = {"kind": kind, "layout": layout, "agents": num_agents, "batch_size": batch_size, "threads": threads,
           "malloc": _malloc_setting(), "rss_start_gb": _rss_gb()}
    pop = tiled_population(kind, layout, num_agents)
    row["rss_built_gb"] = _rss_gb()
    cfg = TrainConfig(population=PRESET[kind], layout=layout, q=Q, epochs=1, max_batches=batches,
                      batch_size=batch_size, seed=0, val_fraction=0.0)
    runs = []
    with mock.patch.object(TrainConfig, "build_population", lambda self, split="train": pop):
        for _ in range(2):  # warm-up, timed
            cpu = _cpu_seconds(lambda: runs.append(training.train(cfg, None, tensorboard=False)))
    row["estimator"] = training.resolve_estimator(cfg, pop)
    timed = runs[-1].history[-1]
    n, full = int(timed["batches"]), -(-pop.num_steps // batch_size)
    positions = min(batch_size, pop.num_steps)
    scale = 1.0 if n == full else full / n  # whole epoch timed, or s/batch x batches per epoch
    decisions = num_agents * (pop.num_steps if n == full else positions * n)
    row.update(batches_per_epoch=full, timed_batches=n, s_per_batch=timed["seconds"] / n,
               s_per_epoch=timed["seconds"] * scale, cpu_s_per_epoch=cpu * scale,
               us_per_decision=cpu / decisions * 1e6)

    model, x = runs[-1].model.train(), pop.observation(torch.arange(positions))

    def net() -> None:
        dist = model.distribution(x)
        (dist.mean.sum() + dist.stddev.sum()).backward()

    row["net_share"] = float(np.median([_cpu_seconds(net) for _ in range(3)])) / (cpu / n)
    row["peak_rss_gb"] = _rss_gb()
    row["bytes_per_decision"] = (row["peak_rss_gb"] - row["rss_start_gb"]) * 2**30 / (num_agents * positions)
    row["load_avg"] = os.getloadavg()[0]
    row["status"] = "ok"
    return row


def _child(args: argparse.Namespace) -> None:
    limit = int(args.memory_limit_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    kind, layout, agents = args.child[0], args.child[1], int(args.child[2])
    try:
        row = measure(kind, layout, agents, args.batches_for(agents), args.batch_size, args.threads)
    except (MemoryError, RuntimeError) as exc:  # torch: "DefaultCPUAllocator: can't allocate memory"
        if "alloc" not in str(exc) and not isinstance(exc, MemoryError):
            raise
        row = {"kind": kind, "layout": layout, "agents": agents, "batch_size": args.batch_size,
               "threads": args.threads, "malloc": _malloc_setting(), "peak_rss_gb": _rss_gb(),
               "status": f"out of memory under the {args.memory_limit_gb:g} GB address-space cap"}
    print("RESULT " + json.dumps(row))


def run_point(kind: str, layout: str, agents: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, layout, str(agents), "--batch-size", str(args.batch_size),
           "--threads", str(args.threads), "--memory-limit-gb", str(args.memory_limit_gb)]
    if args.batches is not None:
        cmd += ["--batches", str(args.batches)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           **(RETAIN_MALLOC if args.malloc == "retain" else {})}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        row = {"kind": kind, "layout": layout, "agents": agents, "batch_size": args.batch_size,
               "threads": args.threads, "malloc": args.malloc,
               "status": f"failed (exit {proc.returncode}): {tail[0][:150]}"}
    else:
        row = json.loads(lines[-1][len("RESULT "):])
    row["date"] = datetime.date.today().isoformat()
    print(f"  {kind} {layout} {args.malloc} {agents:>7,} agents: {row['status']}"
          + (f", {row['s_per_epoch']:.4g} s/epoch, {row['peak_rss_gb']:.2f} GB peak" if row["status"] == "ok" else "")
          + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    return row


def median_run(rows: list[dict]) -> dict:
    """The repeat with the median processor time (lower median), with ``repeats`` and ``spread``.

    ``spread``: ``(max - min) / median`` of the repeats' processor times.
    """
    ok = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: r["cpu_s_per_epoch"])
    if not ok:
        return rows[-1]
    row = dict(ok[(len(ok) - 1) // 2])
    cpu = [r["cpu_s_per_epoch"] for r in ok]
    row.update(repeats=len(ok), spread=(cpu[-1] - cpu[0]) / row["cpu_s_per_epoch"],
               peak_rss_gb=max(r["peak_rss_gb"] for r in ok))
    return row


# --------------------------------------------------------------------------- the fast path's memory model
@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence file descriptor 2 (the profiler's native start/stop lines) for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def peak_tensor_bytes(fn) -> int:
    """Peak bytes of CPU tensors allocated during ``fn()`` (torch profiler allocation events)."""
    from torch.profiler import ProfilerActivity, profile

    with _quiet_native_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    current = peak = 0
    for ev in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += ev.cpu_memory_usage if ev.name == "[memory]" else ev.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


FAST_PATH_BUDGETS = (("unsharded", 2**62), ("256 MiB", 256 * 2**20), ("default 32 MiB", None))


def fast_path_memory(num_agents: int = 20000, batch: int = 128) -> list[dict]:
    """Peak tensor bytes of one ``Population.regret`` call on float32 predictions (shared layout), three budgets."""
    rows = []
    for kind in ("dc", "ev"):
        pop = tiled_population(kind, "shared", num_agents)
        idx = torch.arange(batch)
        g = torch.Generator().manual_seed(0)
        pred = 1.0 + 9.0 * torch.rand(num_agents, batch, pop.horizon, generator=g)  # float32, as sampled
        for what, p in (("per-agent", pred), ("shared", pred[:1])):
            peaks = {name: peak_tensor_bytes(partial(pop.regret, p, idx, memory_budget=budget))
                     for name, budget in FAST_PATH_BUDGETS}
            rows.append({"kind": kind, "layout": "shared", "prediction": what, "agents": num_agents, "batch": batch,
                         "model": pop.groups[0].bytes_per_decision(), **peaks})
    return rows


# --------------------------------------------------------------------------- table
def _read(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as fh:
        return list(csv.DictReader(fh))


def _merge(path: Path, new: list[dict]) -> list[dict]:
    key = lambda r: (r["kind"], r["layout"], r["malloc"], int(r["batch_size"]), int(r["agents"]),  # noqa: E731
                     int(r["threads"]))
    rows = {key(r): r for r in _read(path)}
    rows.update({key(r): {k: r.get(k, "") for k in FIELDS} for r in new})
    _write(path, sorted(rows.values(), key=key), FIELDS)
    return _read(path)


def _write(path: Path, rows: list[dict], fields) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def _f(r: dict, k: str) -> float:
    return float(r[k]) if r.get(k, "") not in ("", None) else math.nan


def exponent(rows: list[dict], y: str, min_agents: int = 500) -> tuple[float, int]:
    """Least-squares slope of log(y) on log(agents) over the ok rows with >= min_agents agents."""
    pts = [(int(r["agents"]), _f(r, y)) for r in rows if r["status"] == "ok" and int(r["agents"]) >= min_agents]
    pts = [(a, v) for a, v in pts if v > 0]
    if len(pts) < 2:
        return math.nan, len(pts)
    slope = np.polyfit(np.log([a for a, _ in pts]), np.log([v for _, v in pts]), 1)[0]
    return float(slope), len(pts)


def table(rows: list[dict]) -> str:
    lines = ["| kind | layout | malloc | batch | agents | timed batches | s/epoch (wall) | s/epoch (CPU) | "
             "CPU µs per agent-decision | net share | peak RSS (GB) | RSS after build (GB) | "
             "bytes per agent-decision | repeats, spread | load | status |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for r in rows:
        head = f"| {r['kind']} | {r['layout']} | {r['malloc']} | {r['batch_size']} | {int(r['agents']):,} | "
        if r["status"] != "ok":
            lines.append(head + f"| | | | | {_f(r, 'peak_rss_gb'):.2f} | | | | | {r['status']} |")
            continue
        lines.append(head + f"{r['timed_batches']} of {r['batches_per_epoch']} | {_f(r, 's_per_epoch'):,.3g} | "
                     f"{_f(r, 'cpu_s_per_epoch'):,.3g} | {_f(r, 'us_per_decision'):.3g} | "
                     f"{_f(r, 'net_share'):.0%} | {_f(r, 'peak_rss_gb'):.2f} | {_f(r, 'rss_built_gb'):.2f} | "
                     f"{_f(r, 'bytes_per_decision'):,.0f} | {r.get('repeats') or 1}, {_f(r, 'spread'):.0%} | "
                     f"{_f(r, 'load_avg'):.1f} | ok |")
    lines += ["", "| kind | layout | malloc | batch | CPU time exponent (points) | wall time exponent | "
              "memory exponent | CPU µs/decision at 50,000 ÷ at 500 |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for group in sorted({(r["kind"], r["layout"], r["malloc"], r["batch_size"]) for r in rows}):
        sub = [r for r in rows if (r["kind"], r["layout"], r["malloc"], r["batch_size"]) == group]
        for r in sub:
            r["peak_above_start"] = _f(r, "peak_rss_gb") - _f(r, "rss_start_gb")
        (ce, n), (we, _), (me, _) = (exponent(sub, k) for k in ("cpu_s_per_epoch", "s_per_epoch", "peak_above_start"))
        at = {int(r["agents"]): _f(r, "us_per_decision") for r in sub if r["status"] == "ok"}
        ratio = f"{at[50000] / at[500]:.2f}" if 500 in at and 50000 in at else "not measured"
        lines.append("| " + " | ".join(group) + f" | {ce:.2f} ({n}) | {we:.2f} | {me:.2f} | {ratio} |")
    return "\n".join(lines)


def fast_path_table(rows: list[dict]) -> str:
    names = [n for n, _ in FAST_PATH_BUDGETS]
    lines = ["| kind | layout | prediction | agents x positions | bytes per agent-decision, unsharded | "
             "model: bytes_per_decision() | " + " | ".join(f"peak MiB, {n}" for n in names) + " |",
             "|---|---|---|---|---:|---:|" + "---:|" * len(names)]
    for r in rows:
        agents, batch = int(r["agents"]), int(r["batch"])
        per = float(r["unsharded"]) / (agents * batch)
        lines.append(f"| {r['kind']} | {r['layout']} | {r['prediction']} | {agents:,} x {batch} | {per:.0f} | "
                     f"{r['model']} | " + " | ".join(f"{float(r[n]) / 2**20:,.0f}" for n in names) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, nargs="+", default=[50, 500, 5000],
                    help="population sizes (default 50 500 5000; the big points 50000 100000 500000 are flags)")
    ap.add_argument("--kinds", nargs="+", choices=tuple(PRESET), default=["dc", "ev"])
    ap.add_argument("--layouts", nargs="+", choices=("shared", "chunked"), default=["shared", "chunked"])
    ap.add_argument("--batches", type=int, default=None,
                    help="batches per epoch run (warm-up and timed); default the whole epoch up to 5,000 agents, "
                         "3 above")
    ap.add_argument("--batch-size", type=int, default=128, dest="batch_size")
    ap.add_argument("--repeats", type=int, default=1,
                    help="child runs per point, round robin over the points; the table keeps the median (default 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the 2 cores are shared)")
    ap.add_argument("--malloc", choices=("system", "retain"), default="system",
                    help="system: glibc's defaults; retain: glibc keeps freed memory for reuse (RETAIN_MALLOC)")
    ap.add_argument("--memory-limit-gb", type=float, default=12.0, dest="memory_limit_gb",
                    help="address-space cap of each child (default 12; RSS stays ~0.6 GB below it)")
    ap.add_argument("--no-fast-path", action="store_true", help="skip the fast path's memory model (part two)")
    ap.add_argument("--report-only", action="store_true", help="rebuild scale.md from the CSV files, run nothing")
    ap.add_argument("--csv", type=Path, default=RESULTS / "scale.csv",
                    help="results CSV (default benchmarks/results/scale.csv; part two goes to *_fast_path.csv)")
    ap.add_argument("--child", nargs=3, metavar=("KIND", "LAYOUT", "AGENTS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.batches_for = lambda m: args.batches if args.batches is not None else (10**9 if m <= 5000 else 3)
    if args.child:
        _child(args)
        return

    torch.set_num_threads(args.threads)
    fast_csv = args.csv.with_name(args.csv.stem + "_fast_path.csv")
    if not args.report_only:
        print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
              f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, "
              f"Python {platform.python_version()}, torch {torch.__version__}, {args.threads} thread(s); "
              f"load average {os.getloadavg()[0]:.1f}; {datetime.date.today().isoformat()}", flush=True)
        points = [(k, lay, m) for m in args.agents for k in args.kinds for lay in args.layouts]
        room = {k: train_positions(k) for k in args.kinds}
        skipped = [p for p in points if p[1] == "chunked" and p[2] > room[p[0]]]
        if skipped:  # the chunked layout gives every agent an equal stretch (at least one) of the split's positions
            print("  skipped: chunked with more agents than training positions ("
                  + ", ".join(f"{k} {m:,} > {room[k]:,}" for k, _, m in skipped) + ")")
        todo = [p for p in points if p not in skipped]
        runs: dict[tuple, list[dict]] = {p: [] for p in todo}
        for _ in range(args.repeats):  # round robin: every point sees the same mix of the machine's load
            for p in todo:
                runs[p].append(run_point(*p, args))
        _merge(args.csv, [median_run(r) for r in runs.values()])
        if not args.no_fast_path:
            fast = fast_path_memory()
            _write(fast_csv, fast, list(fast[0]))
    text = ["## Seconds per epoch and peak memory", "", table(_read(args.csv))]
    if fast_csv.exists():
        text += ["", "## Memory of the regret fast path (Population.regret)", "", fast_path_table(_read(fast_csv))]
    out = "\n".join(text)
    print("\n" + out)
    args.csv.with_suffix(".md").write_text(out + "\n")


if __name__ == "__main__":
    main()
