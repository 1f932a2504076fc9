r"""``eqpm benchmark``: our update rules against policy-gradient and decision-focused baselines, at equal budgets.

The protocol, the same for every method (:mod:`trainers.baselines` lists them):

1. **Splits.**  Each method trains on the setting's training split without
   its validation stretch (the last ``val_fraction`` of the training data,
   :mod:`eq_envs.splits`), chooses hyper-parameters and checkpoints on the
   validation split, and is reported on the test split.  The test split is
   never used to choose anything.
2. **Budget.**  ``budget`` agent-decisions per run (one agent deciding on one
   prediction and being scored; :mod:`trainers.baselines.base` says what counts
   for each family).  A method stops at its last whole update unit within the
   budget (a batch, a rollout, an env step) and reports the clock positions
   (inputs) it saw, the decisions it used, its gradient steps and its training
   wall time.
3. **Checkpoints.**  At the initial model, at ``checkpoints`` evenly spaced
   fractions of the budget and at the equal-inputs point (below), every run is
   evaluated on the validation and the test split by the same code:
   :func:`trainers.evaluation.agent_regrets` (per-step protocol: the
   deterministic prediction at every clock position, every agent decides;
   SB3 policies through :class:`eq_envs.sb3_env.PolicyPredictor`) and
   :func:`trainers.metrics.equity_metrics`.
4. **Criterion.**  The norm-form Equitable Objective at the setting's
   ``q + 1`` of the per-agent validation regrets (weighted by the population's
   regret weights), :func:`criterion`; lower is better.  The same for every
   method, whatever it optimises (the benchmark asks which method gives the
   most equitable public model).
5. **Tuning.**  Every method has a grid of the same size (learning rate x a
   batch-like size, :func:`trainers.baselines.base.lr_batch_grid`: 6 points,
   ``--quick`` 2), run once on the tuning seed (``tune_seed``, not one of the
   reported seeds).  A grid point scores its best checkpoint's criterion; the
   lowest score is chosen.  Grid, scores and choice are written to the results.
6. **Reported runs.**  The chosen point on each of ``seeds``; each run's
   checkpoint is chosen on validation (lowest criterion), and its test
   metrics are reported: mean ± std over seeds and one row per seed.
7. **Equal inputs.**  ``P*`` is the number of clock positions that the most
   decision-hungry method applicable to the population reaches within the
   budget (``budget // max decisions per position``); every run is also
   reported at its best-on-validation checkpoint among those at most ``P*``
   positions in.

Runs are independent jobs (one directory each under ``ROOT/runs``, finished
when ``result.json`` exists for the same settings, so a benchmark can be
stopped and restarted; a lock file keeps a second benchmark out of the same
root while one runs); they run on Ray (local by default, a cluster by
``address``) or sequentially, one torch thread each.  :mod:`trainers.benchmark_report`
turns the run directories into the tables and plots.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from eq_envs.population import Population
from eq_envs.population_file import population_label
from eq_envs.splits import VAL_FRACTION
from trainers.baselines import METHODS, MethodRun
from trainers.baselines.base import Counts, Predictor
from trainers.config import TrainConfig
from trainers.errors import DivergenceError
from trainers.evaluation import agent_regrets
from trainers.grid import BACKENDS, ray_result, ray_session
from trainers.metrics import equity_metrics
from trainers.objectives import equitable_loss
from trainers.rundir import RunDirLock
from trainers.updates import NonFiniteError

#: Held-out metrics recorded at every checkpoint (both splits).
METRICS = ("variance", "mean", "c95_c5", "worst", "mse")
DEFAULT_BUDGET, QUICK_BUDGET = 2_000_000, 20_000
DEFAULT_CHECKPOINTS, QUICK_CHECKPOINTS = 6, 2
DEFAULT_SEEDS, DEFAULT_TUNE_SEED = (0, 1, 2), 100
RESULT_FILE = "result.json"
#: Bumped when what a run records changes (part of every run id, so older runs are not mistaken for current ones).
RECORD_VERSION = 1


# ---------------------------------------------------------------------------------------------- settings
_POPULATIONS: dict[tuple[str, str], Population] = {}


@dataclass
class Setting:
    """A population in one layout at one equity exponent: what every method of a benchmark is trained on.

    ``population`` is a preset name (with ``region``, ``preset`` and
    ``layout``) or a population spec (which carries its own).  ``model``:
    public-model settings (:func:`trainers.networks.build_public_model`) for
    every method that trains our public model (our rules, the Plain PM, SPO+,
    PFYL); empty: the trainer's default for the population.
    """

    population: str | dict[str, Any]
    layout: str = "shared"
    q_plus_1: float = 20.0
    region: str = "CISO"
    preset: str = "paper"
    model: dict[str, Any] = field(default_factory=dict)

    @property
    def is_spec(self) -> bool:
        return isinstance(self.population, dict)

    @property
    def name(self) -> str:
        return population_label(self.population)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.layout})"

    @property
    def slug(self) -> str:
        return _slug(f"{self.name}-{self.layout}")

    @property
    def q(self) -> float:
        return float(self.q_plus_1) - 1.0

    def config(self, **settings: Any) -> TrainConfig:
        """A :class:`TrainConfig` on this setting's population and splits, with ``settings``."""
        base: dict[str, Any] = {"population": self.population, "val_fraction": VAL_FRACTION}
        if self.model:
            base["model"] = self.model
        if not self.is_spec:
            base.update(region=self.region, preset=self.preset, layout=self.layout)
        return TrainConfig.from_dict({**base, **settings}, source=f"benchmark setting {self.label}")

    def split_population(self, split: str) -> Population:
        """The population on ``split`` (``"train"`` without the validation stretch, ``"val"``, ``"test"``), cached."""
        key = (json.dumps(self.to_dict(), sort_keys=True), split)
        if key not in _POPULATIONS:
            _POPULATIONS[key] = self.config().build_population(split)
        return _POPULATIONS[key]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Setting:
        return cls(**{"model": {}, **d})


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_") or "x"


def criterion(agent_regret: np.ndarray, weights: np.ndarray, q: float) -> float:
    """The selection criterion: ``(Σ_m (w_m C_m)^(q+1))^(1/(q+1))`` of per-agent regrets ``C`` (lower is better)."""
    c = torch.as_tensor(np.asarray(agent_regret, dtype=np.float64) * np.asarray(weights, dtype=np.float64))
    return float(equitable_loss(c.clamp_min(0.0), q, form="norm"))


# ---------------------------------------------------------------------------------------------- jobs
@dataclass
class Job:
    """One training run of the benchmark: a method at one grid point and one seed on one setting.

    ``role``: ``"tune"`` (the tuning seed, every grid point) or ``"eval"`` (the
    chosen point, a reported seed).  ``targets``: decision counts of the
    checkpoints; ``inputs_budget``: the equal-inputs point ``P*`` (positions).
    """

    setting: Setting
    method: str
    hp: dict[str, Any]
    hp_id: int
    seed: int
    role: str
    budget: int
    targets: list[int]
    inputs_budget: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["setting"] = self.setting.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Job:
        return cls(**{**d, "setting": Setting.from_dict(d["setting"])})

    @property
    def run_id(self) -> str:
        digest = hashlib.sha1(json.dumps([RECORD_VERSION, self.to_dict()], sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.setting.slug}/{_slug(self.method)}/{self.role}-hp{self.hp_id}-seed{self.seed}-{digest}"


def run_dir(root: str | Path, job: Job) -> Path:
    return Path(root) / "runs" / job.run_id


def load_result(root: str | Path, job: Job) -> dict[str, Any] | None:
    """The finished record of ``job`` (``None`` while it is not finished with exactly these settings)."""
    p = run_dir(root, job) / RESULT_FILE
    if not p.is_file():
        return None
    try:
        rec = json.loads(p.read_text())
    except json.JSONDecodeError:
        return None
    return rec if rec.get("job") == job.to_dict() else None


def write_result(root: str | Path, record: dict[str, Any]) -> None:
    d = run_dir(root, Job.from_dict(record["job"]))
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / (RESULT_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, d / RESULT_FILE)


def evaluate_point(predictor: Predictor, pop: Population, q: float) -> tuple[dict[str, float], np.ndarray]:
    """Held-out metrics (:data:`METRICS` and ``criterion``) of a predictor on ``pop``, and its per-agent regrets.

    The one evaluation of the benchmark (module doc, step 3).  A predictor
    whose regrets cannot be scored (non-finite) gets NaN metrics and an
    infinite criterion, so it is never chosen.
    """
    regrets, mse = agent_regrets(predictor, pop)
    if not np.isfinite(regrets).all():
        return {**{k: math.nan for k in METRICS}, "criterion": math.inf}, regrets
    m = equity_metrics(regrets, pop.agent_names, mse)
    out = {k: float(m[k]) for k in METRICS}
    out["criterion"] = criterion(regrets, pop.agent_weights.numpy(), q)
    return out, regrets


def execute_job(job_dict: dict[str, Any], root: str, threads: int | None = 1) -> dict[str, Any]:
    """Train one job's run, evaluating every checkpoint; returns its record (also the Ray task).

    An unfinished run directory from an interrupted benchmark is cleared
    first: a run restarts from scratch, so its wall time stays one measurement.
    A run that diverges (non-finite loss, gradient or parameter) ends there;
    its checkpoints so far count, and ``note`` says what happened.
    """
    if threads:
        torch.set_num_threads(threads)
        os.environ["EQPM_THREADS"] = str(threads)
    job = Job.from_dict(job_dict)
    method = METHODS[job.method]
    out = run_dir(root, job)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    val, test = job.setting.split_population("val"), job.setting.split_population("test")
    q = job.setting.q
    curve: list[dict[str, Any]] = []
    best: dict[str, Any] = {"criterion": math.inf, "index": None, "file": None, "test_agent_regret": None}

    def checkpoint(counts: Counts, predictor: Predictor, save: Callable[[Path], Path]) -> None:
        point: dict[str, Any] = counts.to_dict()
        point["val"], _ = evaluate_point(predictor, val, q)
        test_regrets = None
        if job.role == "eval":  # tuning runs never look at the test split
            point["test"], test_regrets = evaluate_point(predictor, test, q)
        curve.append(point)
        if point["val"]["criterion"] < best["criterion"]:
            best.update(criterion=point["val"]["criterion"], index=len(curve) - 1,
                        file=save(out / "best").name,
                        test_agent_regret=None if test_regrets is None else test_regrets.tolist())

    t0 = time.perf_counter()
    note = ""
    try:
        method.run(MethodRun(job.setting, dict(job.hp), job.seed, list(job.targets), out, checkpoint))
    except (DivergenceError, NonFiniteError) as exc:
        note = f"stopped after the checkpoint at {curve[-1]['decisions'] if curve else 0:,} decisions: {exc}"
    inputs = [i for i, p in enumerate(curve) if p["positions"] <= job.inputs_budget]
    return {"job": job.to_dict(), "run_id": job.run_id, "curve": curve, "best": best["index"],
            "best_inputs": min(inputs, key=lambda i: curve[i]["val"]["criterion"]) if inputs else None,
            "best_file": best["file"], "test_agent_regret": best["test_agent_regret"],
            "agent_names": list(test.agent_names), "note": note, "elapsed_s": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------- the plan
@dataclass
class Group:
    """One method on one setting: its grid, its tuning runs and, once a point is chosen, its reported runs."""

    setting: Setting
    method: str
    grid: list[dict[str, Any]]
    targets: list[int]
    inputs_budget: int
    budget: int
    seeds: tuple[int, ...]
    tune_seed: int

    def _job(self, hp_id: int, seed: int, role: str) -> Job:
        return Job(self.setting, self.method, dict(self.grid[hp_id]), hp_id, seed, role, self.budget,
                   list(self.targets), self.inputs_budget)

    def tune_jobs(self) -> list[Job]:
        """Every grid point on the tuning seed (none for a one-point grid: nothing to choose)."""
        if len(self.grid) == 1:
            return []
        return [self._job(i, self.tune_seed, "tune") for i in range(len(self.grid))]

    def eval_jobs(self, hp_id: int) -> list[Job]:
        return [self._job(hp_id, s, "eval") for s in self.seeds]

    def choose(self, records: Sequence[dict[str, Any]]) -> int:
        """The grid point whose tuning run reached the lowest validation criterion (ties: the first)."""
        if len(self.grid) == 1:
            return 0
        return min(range(len(records)), key=lambda i: best_criterion(records[i]))


def best_criterion(record: dict[str, Any]) -> float:
    """A run's score: the validation criterion of its best checkpoint (``inf`` if none could be scored)."""
    return record["curve"][record["best"]]["val"]["criterion"] if record["best"] is not None else math.inf


@dataclass
class Plan:
    """Everything a benchmark runs: settings x methods, budgets, checkpoints, seeds."""

    settings: list[Setting]
    methods: dict[str, list[str]]  # setting label -> method names that run on it
    budget: int
    checkpoints: int
    seeds: tuple[int, ...]
    tune_seed: int
    quick: bool
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)  # setting label -> method -> why not

    def inputs_budget(self, setting: Setting) -> int:
        """``P*``: clock positions within the budget of the most decision-hungry method applicable here."""
        pop = setting.split_population("train")
        per_position = [m.decisions_per_position(pop) for m in METHODS.values() if m.applies(pop) is None]
        return self.budget // max(per_position)

    def targets(self, setting: Setting, method: str) -> list[int]:
        """Checkpoint decision counts: ``checkpoints`` even fractions of the budget and ``P*``'s decisions."""
        pop = setting.split_population("train")
        even = {self.budget * j // self.checkpoints for j in range(1, self.checkpoints + 1)}
        return sorted(even | {self.inputs_budget(setting) * METHODS[method].decisions_per_position(pop)})

    def groups(self) -> list[Group]:
        out = []
        for s in self.settings:
            p_star = self.inputs_budget(s)
            for name in self.methods[s.label]:
                out.append(Group(s, name, METHODS[name].grid(s, self.quick), self.targets(s, name), p_star,
                                 self.budget, self.seeds, self.tune_seed))
        return out


def make_plan(settings: Sequence[Setting], methods: Sequence[str] | None, *, budget: int | None = None,
              checkpoints: int | None = None, seeds: Sequence[int] | None = None,
              tune_seed: int = DEFAULT_TUNE_SEED, quick: bool = False) -> Plan:
    """Validate everything and build the :class:`Plan` (raises ``ValueError`` with one line; writes nothing).

    ``methods=None``: :data:`trainers.baselines.DEFAULT_METHODS` that apply to
    each population (the others are listed in ``Plan.skipped``); named methods
    must apply to every setting.
    """
    from trainers.baselines import DEFAULT_METHODS

    budget = QUICK_BUDGET if budget is None and quick else (budget or DEFAULT_BUDGET)
    checkpoints = checkpoints or (QUICK_CHECKPOINTS if quick else DEFAULT_CHECKPOINTS)
    seeds = tuple(seeds) if seeds else ((0,) if quick else DEFAULT_SEEDS)
    if not settings:
        raise ValueError("no population given; accepted: --population NAME or --population-file FILE")
    if budget < 1:
        raise ValueError(f"budget {budget}; accepted: agent-decisions per run, an integer >= 1")
    if checkpoints < 1:
        raise ValueError(f"checkpoints {checkpoints}; accepted: an integer >= 1")
    if any(int(x) < 0 for x in (*seeds, tune_seed)):
        raise ValueError(f"seeds {list(seeds)}, tuning seed {tune_seed}; accepted: integers >= 0")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds {list(seeds)} repeat; accepted: distinct seeds")
    if tune_seed in seeds:
        raise ValueError(f"tuning seed {tune_seed} is also a reported seed ({list(seeds)}); accepted: a separate seed")
    for name in methods or ():
        if name not in METHODS:
            raise ValueError(f"unknown method {name!r}; accepted: {', '.join(METHODS)}")
    chosen: dict[str, list[str]] = {}
    skipped: dict[str, dict[str, str]] = {}
    for s in settings:
        if not s.q_plus_1 >= 1:
            raise ValueError(f"q+1 = {s.q_plus_1}; accepted: a number >= 1")
        for split in ("train", "val", "test"):
            s.split_population(split)  # every split builds (data files read, settings valid) before anything runs
        pop = s.split_population("train")
        why = {n: METHODS[n].applies(pop) for n in (methods or DEFAULT_METHODS)}
        if methods:
            bad = {n: w for n, w in why.items() if w is not None}
            if bad:
                n, w = next(iter(bad.items()))
                raise ValueError(f"method {n!r} does not apply to {s.label}: {w}")
        chosen[s.label] = [n for n, w in why.items() if w is None]
        skipped[s.label] = {n: w for n, w in why.items() if w is not None}
        if not chosen[s.label]:
            raise ValueError(f"no method applies to {s.label}")
    plan = Plan(list(settings), chosen, int(budget), int(checkpoints), seeds, int(tune_seed), quick, skipped)
    for g in plan.groups():  # every method fits at least one update unit in the budget
        pop = g.setting.split_population("train")
        if g.inputs_budget < 1:
            raise ValueError(f"budget {budget:,} is less than one clock position of {g.setting.label} for the most "
                             f"decision-hungry method; accepted: a larger --budget")
        for hp in g.grid:
            need = METHODS[g.method].decisions_per_unit(pop, hp)
            if need > budget:
                raise ValueError(f"method {g.method!r} at {hp} needs {need:,} agent-decisions for one update on "
                                 f"{g.setting.label}; the budget is {budget:,}; accepted: a larger --budget")
    return plan


# ---------------------------------------------------------------------------------------------- running
class _Sequential:
    def __init__(self, root: Path) -> None:
        self.root, self.queue = root, deque()

    def submit(self, job: Job) -> None:
        self.queue.append(job)

    def __len__(self) -> int:
        return len(self.queue)

    def next(self) -> dict[str, Any]:
        return execute_job(self.queue.popleft().to_dict(), str(self.root))


class _Ray:
    def __init__(self, ray: Any, root: Path) -> None:
        self.ray, self.root = ray, root
        self.task = ray.remote(num_cpus=1, max_retries=1)(execute_job)
        self.pending: dict[Any, Job] = {}

    def submit(self, job: Job) -> None:
        self.pending[self.task.remote(job.to_dict(), str(self.root.resolve()))] = job

    def __len__(self) -> int:
        return len(self.pending)

    def next(self) -> dict[str, Any]:
        ready, _ = self.ray.wait(list(self.pending), num_returns=1)
        job = self.pending.pop(ready[0])
        return ray_result(self.ray, ready[0], self.pending, job.run_id)


def run_plan(plan: Plan, root: str | Path, *, backend: str = "ray", address: str | None = None,
             num_cpus: int | None = None, report: Callable[[str], None] | None = None) -> dict[str, int]:
    """Run every unfinished job of ``plan`` (tuning first; a group's reported runs once its tuning is done).

    Returns counts ``{"total", "skipped", "ran"}`` (jobs known so far: a group's
    reported runs count once its point is chosen).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not accepted; accepted: {', '.join(BACKENDS)}")
    root = Path(root)
    say = report or (lambda msg: print(msg, file=sys.stderr, flush=True))
    groups = plan.groups()
    counts = {"total": 0, "skipped": 0, "ran": 0}
    t0 = time.perf_counter()
    waiting: dict[int, set[str]] = {}  # group -> run ids of its unfinished tuning runs
    counted: set[int] = set()  # groups whose tuning runs are counted

    def submit(executor: Any, jobs: list[Job]) -> list[Job]:
        todo = [j for j in jobs if load_result(root, j) is None]
        counts["total"] += len(jobs)
        counts["skipped"] += len(jobs) - len(todo)
        for j in todo:
            executor.submit(j)
        return todo

    def start(executor: Any, i: int) -> None:
        """Submit group ``i``'s unfinished tuning runs, or, once they are all finished, its reported runs."""
        g = groups[i]
        tune = g.tune_jobs()
        if i not in counted:
            counted.add(i)
            todo = submit(executor, tune)
            if todo:
                waiting[i] = {j.run_id for j in todo}
                return
        submit(executor, g.eval_jobs(g.choose([load_result(root, j) for j in tune])))

    def drive(executor: Any) -> None:
        for i in range(len(groups)):
            start(executor, i)
        say(f"benchmark: {len(groups)} method x setting groups, {len(executor)} runs queued "
            f"({counts['skipped']} finished before; {backend})")
        while len(executor):
            rec = executor.next()
            write_result(root, rec)
            counts["ran"] += 1
            c = rec["curve"][rec["best"]] if rec["best"] is not None else None
            what = f"val criterion {c['val']['criterion']:.4g}" if c else "no checkpoint"
            if c and "test" in c:
                what += f", test variance {c['test']['variance']:.4g}, mean {c['test']['mean']:.4g}"
            say(f"[{time.perf_counter() - t0:7.1f}s] {counts['ran']} done, {len(executor)} queued: {rec['run_id']}: "
                f"{what}" + (f" ({rec['note']})" if rec["note"] else ""))
            for i, ids in list(waiting.items()):
                if rec["run_id"] in ids:
                    ids.discard(rec["run_id"])
                    if not ids:
                        start(executor, i)

    with RunDirLock(root):  # one benchmark at a time per root: a second one would restart the first one's runs
        if backend == "sequential":
            drive(_Sequential(root))
        else:
            with ray_session(address, num_cpus) as ray:
                drive(_Ray(ray, root))
    return counts


def finished_records(plan: Plan, root: str | Path) -> list[tuple[Group, list[dict[str, Any]], list[dict[str, Any]]]]:
    """Per group: its tuning records and its reported records (finished ones only; empty until chosen)."""
    out = []
    for g in plan.groups():
        tune = [load_result(root, j) for j in g.tune_jobs()]
        evals: list[dict[str, Any]] = []
        if all(r is not None for r in tune):
            evals = [r for r in (load_result(root, j) for j in g.eval_jobs(g.choose(tune))) if r is not None]
        out.append((g, [r for r in tune if r is not None], evals))
    return out
