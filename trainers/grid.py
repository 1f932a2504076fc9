"""Run a grid of training runs on Ray, or sequentially, and skip what is finished.

Each run lives in ``ROOT/runs/<run_id>/``: the trainer's own files (config,
metrics.csv, checkpoint.pt, model.pt) and, once evaluated, ``result.json`` and
``agent_regret.csv``.  A run whose ``result.json`` exists with the same
settings is finished and is not run again; an interrupted run resumes from its
checkpoint.  Results are always aggregated from the run directories
(:func:`collect`), never from memory, so a study can be stopped and restarted
at any point.

Ray: by default a local Ray instance on this machine's cores is started (no
set-up); ``address=`` joins an existing cluster (``"auto"`` or
``"ray://host:10001"``).  Each run is one Ray task with ``num_cpus=1`` and
one torch thread.  Workers send their results back to the driver, which
writes ``result.json``; on a cluster without a shared file system, the
checkpoints stay on the worker's disk (a restarted study then retrains
unfinished runs from scratch).  On a cluster, every node needs this package
installed (``pip install -e .``) with its bundled data.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainers.studies import RunSpec

log = logging.getLogger("trainers")
BACKENDS = ("ray", "sequential")
RESULT_FILE = "result.json"


def run_dir(root: Path, spec: RunSpec) -> Path:
    return Path(root) / "runs" / spec.run_id


def is_finished(root: Path, spec: RunSpec) -> bool:
    """True when ``result.json`` exists for exactly these settings."""
    p = run_dir(root, spec) / RESULT_FILE
    if not p.is_file():
        return False
    try:
        return json.loads(p.read_text()).get("config") == spec.config
    except json.JSONDecodeError:
        return False


def samples_per_epoch(cfg: Any, num_agents: int, num_steps: int) -> int:
    """Agent-decisions one epoch scores: positions x agents x (samples + a deterministic baseline)."""
    positions = num_steps
    if cfg.max_batches is not None:
        positions = min(num_steps, cfg.max_batches * cfg.batch_size)
    if cfg.objective == "mse":
        per_input = 1  # the logged regret of the mean prediction (the MSE fit itself needs no decision)
    else:
        extra = 1 if cfg.estimator == "reinforce_weighted" and (cfg.baseline or "deterministic") == "deterministic" else 0
        per_input = cfg.num_samples + extra
    return positions * num_agents * per_input


def execute(spec_dict: dict[str, Any], root: str, threads: int | None = 1, progress: bool = False) -> dict[str, Any]:
    """Train (or resume) and evaluate one run; returns the result record (also used as the Ray task).

    ``progress`` shows the run's epoch bar (the sequential backend's).

    Imports are local so that a Ray worker pays for them once per process.
    """
    import torch

    from trainers.evaluation import agent_regrets
    from trainers.metrics import equity_metrics
    from trainers.training import train

    if threads:
        torch.set_num_threads(threads)
        os.environ["EQPM_THREADS"] = str(threads)
    spec = RunSpec.from_dict(spec_dict)
    cfg = spec.train_config(root)
    out = run_dir(Path(root), spec)
    t0 = time.perf_counter()
    res = train(cfg, out, resume=True, progress=progress, tensorboard=False)
    train_s = sum(h["seconds"] for h in res.history)
    train_pop = cfg.build_population("train")
    test = cfg.build_population("test")
    record: dict[str, Any] = {**spec.to_dict(), "train_seconds": train_s, "epochs_run": len(res.history),
                              "selected_epoch": res.selected_epoch, "init_run": spec.init_run,
                              "samples": samples_per_epoch(cfg, train_pop.num_agents, train_pop.num_steps)
                              * len(res.history),
                              "final_train_eq_loss": res.history[-1]["eq_loss"] if res.history else None,
                              "final_train_mean_regret": res.history[-1]["mean_regret"] if res.history else None}
    agents: dict[str, list[float]] = {}
    for protocol, key in (("per-step", "test"), ("mean-forecast", "test_mean_forecast")):
        regrets, mse = agent_regrets(res.model, test, protocol)
        record[key] = equity_metrics(regrets, test.agent_names, mse)
        agents[protocol] = regrets.tolist()
    record["train"] = _train_split_metrics(res.model, train_pop)
    if cfg.val_fraction > 0:  # the numbers model selection across configurations reads (never the test split's)
        record["val"] = _train_split_metrics(res.model, cfg.build_population("val"))
    record["agent_names"] = list(test.agent_names)
    record["agent_regret"] = agents
    record["wall_seconds"] = time.perf_counter() - t0
    return record


def _train_split_metrics(model: Any, train_pop: Any) -> dict[str, Any]:
    """Per-step equity metrics on the training (or validation) split: to tell fitting from generalising."""
    from trainers.evaluation import agent_regrets
    from trainers.metrics import equity_metrics

    regrets, mse = agent_regrets(model, train_pop, "per-step")
    return equity_metrics(regrets, train_pop.agent_names, mse)


def add_train_metrics(root: str | Path, specs: Sequence[RunSpec]) -> int:
    """Fill in training-split metrics of finished runs whose ``result.json`` predates them; returns how many."""
    from trainers.networks import load_public_model

    n = 0
    for s in _unique(specs):
        p = run_dir(Path(root), s) / RESULT_FILE
        if not is_finished(Path(root), s):
            continue
        rec = json.loads(p.read_text())
        if "train" in rec:
            continue
        cfg = s.train_config(root)
        pop = cfg.build_population("train")
        rec["train"] = _train_split_metrics(load_public_model(p.parent / "model.pt"), pop)
        tmp = p.with_name(RESULT_FILE + ".tmp")
        tmp.write_text(json.dumps(rec, indent=1))
        os.replace(tmp, p)
        n += 1
    return n


def write_result(root: Path, record: dict[str, Any]) -> None:
    """Write ``result.json`` and ``agent_regret.csv`` atomically into the run directory."""
    d = Path(root) / "runs" / record["run_id"]
    d.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(record["agent_regret"], index=pd.Index(record["agent_names"], name="agent")) \
        .to_csv(d / "agent_regret.csv")
    tmp = d / (RESULT_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, d / RESULT_FILE)


def _unique(specs: Sequence[RunSpec]) -> list[RunSpec]:
    seen: dict[str, RunSpec] = {}
    for s in specs:
        seen.setdefault(s.run_id, s)
    return list(seen.values())


def run_grid(specs: Sequence[RunSpec], root: str | Path, *, backend: str = "ray", address: str | None = None,
             num_cpus: int | None = None, report: Callable[[str], None] | None = None,
             progress: bool = False) -> dict[str, int]:
    """Run every unfinished spec; returns counts ``{"total", "skipped", "ran"}``.

    ``progress`` (sequential backend): a bar over the runs, and each run's bar over its epochs, from the start.

    Runs shared by several studies (the same settings, hence the same
    ``run_id``) are trained once.  A run fine-tuned from another run of the
    grid (:attr:`RunSpec.init_run`) starts after that run has finished: the
    grid runs in waves, the runs whose starting point is ready first.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not accepted; accepted: {', '.join(BACKENDS)}")
    root = Path(root)
    say = report or (lambda msg: print(msg, file=sys.stderr, flush=True))
    unique = _unique(specs)
    todo = [s for s in unique if not is_finished(root, s)]
    counts = {"total": len(unique), "skipped": len(unique) - len(todo), "ran": 0}
    say(f"{len(unique)} runs: {counts['skipped']} finished before, {len(todo)} to run ({backend})")
    if not todo:
        return counts
    t0 = time.perf_counter()

    def done(record: dict[str, Any]) -> None:
        write_result(root, record)
        counts["ran"] += 1
        m = record["test"]
        say(f"[{time.perf_counter() - t0:7.1f}s] {counts['ran']}/{len(todo)} {record['run_id']}: "
            f"variance {m['variance']:.4g}, mean {m['mean']:.4g}, C95-C5 {m['c95_c5']:.4g}, MSE {m['mse']:.4g}")

    waves = _waves(todo, unique, root)
    if backend == "sequential":
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(todo), desc="runs", unit="run")
            say = bar.write
        try:
            for wave in waves:
                for s in wave:
                    done(execute(s.to_dict(), str(root), threads=None, progress=progress))
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return counts

    with ray_session(address, num_cpus) as ray:
        task = ray.remote(num_cpus=1, max_retries=1)(execute)
        for wave in waves:  # a fine-tune starts once the run it starts from has finished
            pending = {task.remote(s.to_dict(), str(root.resolve())): s for s in wave}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                spec = pending.pop(ready[0])
                done(ray_result(ray, ready[0], pending, spec.run_id))
    return counts


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """The ``ray`` module, initialised for this project's tasks (one torch thread each) unless it already was.

    ``address=None`` starts a local instance on ``num_cpus`` cores (default:
    all); otherwise joins that cluster.  A session started here is shut down on exit.
    """
    import ray

    started_here = not ray.is_initialized()
    if started_here:
        env = {"env_vars": {"EQPM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}}
        if address is None:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, runtime_env=env,
                     configure_logging=False)
        else:
            ray.init(address=address, log_to_driver=False, runtime_env=env, configure_logging=False)
    try:
        yield ray
    finally:
        if started_here:
            ray.shutdown()


def ray_result(ray: Any, ref: Any, pending: dict[Any, Any], what: str) -> Any:
    """``ray.get(ref)``; if the task failed, cancel the ``pending`` ones and raise one ``RuntimeError`` naming ``what``."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        for other in pending:
            ray.cancel(other)
        raise RuntimeError(f"run {what} failed: {exc.cause!r}") from exc.cause


def _waves(todo: list[RunSpec], unique: list[RunSpec], root: Path) -> list[list[RunSpec]]:
    """``todo`` in waves: runs without a starting point in the grid (or whose starting point is finished) first,
    then the runs fine-tuned from those.  A starting point that is neither in the grid nor finished is an error."""
    known = {s.run_id for s in unique}
    pending = {s.run_id for s in todo}
    waves: list[list[RunSpec]] = []
    left = list(todo)
    while left:
        ready = [s for s in left if s.init_run is None or s.init_run not in pending]
        if not ready:
            raise ValueError(f"runs {[s.run_id for s in left][:3]} start from each other in a cycle")
        for s in ready:
            if s.init_run is not None and s.init_run not in known and not (root / "runs" / s.init_run / "model.pt").is_file():
                raise ValueError(f"run {s.run_id} starts from run {s.init_run}, which is neither in the grid nor "
                                 f"finished under {root}")
        waves.append(ready)
        pending -= {s.run_id for s in ready}
        left = [s for s in left if s.run_id in pending]
    return waves


def collect(root: str | Path, specs: Sequence[RunSpec]) -> pd.DataFrame:
    """One row per finished run of ``specs`` (study labels from the specs, numbers from the run directories).

    Columns: study, setting, method, q_plus_1, beta, estimator, seed, protocol,
    paper_grid, lr, run_id, init_run, recipe (``fine-tune`` from another run of the grid, or ``scratch``),
    selected_epoch, the per-step test metrics,
    the mean-forecast metrics prefixed ``mf_``, the training- and validation-split
    metrics prefixed ``train_`` and ``val_`` (when recorded), samples, train_seconds.
    Unfinished runs are left out (and counted in ``attrs['missing']``).
    """
    rows, missing = [], []
    for s in specs:
        p = run_dir(Path(root), s) / RESULT_FILE
        if not is_finished(Path(root), s):
            missing.append(s.run_id)
            continue
        rec = json.loads(p.read_text())
        row: dict[str, Any] = {"study": s.study, "setting": s.setting, "method": s.method,
                               "q_plus_1": s.q_plus_1 if s.q_plus_1 is not None else np.nan, "beta": s.beta,
                               "estimator": s.estimator, "seed": s.seed, "protocol": s.protocol,
                               "paper_grid": s.paper_grid, "lr": s.config.get("lr"), "run_id": s.run_id,
                               "init_run": s.init_run, "recipe": "fine-tune" if s.init_run else "scratch",
                               "selected_epoch": rec.get("selected_epoch"),
                               "samples": rec["samples"], "train_seconds": rec["train_seconds"]}
        row.update({k: v for k, v in rec["test"].items()})
        row.update({f"mf_{k}": v for k, v in rec["test_mean_forecast"].items()})
        row.update({f"train_{k}": v for k, v in rec.get("train", {}).items()})
        row.update({f"val_{k}": v for k, v in rec.get("val", {}).items()})
        rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs["missing"] = missing
    return df


def agent_regret_table(root: str | Path, spec: RunSpec, protocol: str = "per-step") -> pd.Series:
    """Per-agent held-out regret of one finished run."""
    df = pd.read_csv(run_dir(Path(root), spec) / "agent_regret.csv", index_col="agent")
    return df[protocol]
