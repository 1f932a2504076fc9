"""What every benchmark method shares: the interface, the budget bookkeeping and the registry.

A *method* trains a public model (or an RL policy playing one) on a
setting's training split and reports checkpoints; the benchmark engine
(:mod:`trainers.benchmark`) evaluates every checkpoint with the same code,
chooses hyper-parameters and checkpoints on the validation split and writes
the tables.  A method only has to

* say whether it applies to a population (:meth:`Method.applies`),
* say how many agent-decisions one clock position costs it (:meth:`Method.decisions_per_position`),
* list its hyper-parameter grid (:meth:`Method.grid`), and
* train (:meth:`Method.run`), calling ``run.checkpoint(...)`` at the
  decision counts in ``run.targets`` (at the last whole update unit that fits).

**Units.**  A *clock position* is one public input time (the chunked layout's
``M`` per-agent inputs of one position count once); an *agent-decision* is one
agent deciding on one prediction and being scored (or, for a
decision-focused loss, one solve of an agent's problem on a predicted cost);
a *gradient step* is one optimizer step on the network that becomes the
public model.  Wall time counts training only (no evaluation, no checkpoint
files).

Adding a method is one file with a :class:`Method` subclass and a
:func:`register` call, and its import in :mod:`trainers.baselines`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from eq_envs.population import Population

#: Families of methods, in table order.
FAMILIES = ("ours", "sb3", "dfl")


class Predictor(Protocol):
    """What :func:`trainers.evaluation.agent_regrets` scores: a deterministic public model."""

    def eval(self) -> Any: ...

    def mean(self, x: Any) -> Any: ...


@dataclass
class Counts:
    """Cumulative work of a run at a checkpoint (module doc for the units)."""

    positions: int
    decisions: int
    grad_steps: int
    wall_s: float

    def to_dict(self) -> dict[str, float]:
        return {"positions": self.positions, "decisions": self.decisions, "grad_steps": self.grad_steps,
                "wall_s": self.wall_s}


#: ``checkpoint(counts, predictor, save)``: ``save(path_without_suffix)`` writes the predictor's files and
#: returns the path written (the engine keeps the best checkpoint on validation).
CheckpointFn = Callable[[Counts, Predictor, Callable[[Path], Path]], None]


class SettingView(Protocol):
    """The part of a benchmark setting a method sees (:class:`trainers.benchmark.Setting`)."""

    @property
    def q(self) -> float: ...

    @property
    def label(self) -> str: ...

    def split_population(self, split: str) -> Population: ...

    def config(self, **settings: Any) -> Any: ...


@dataclass
class MethodRun:
    """One training run of a method: what to train, for how long, and where to report.

    Attributes:
        setting: population, layout, ``q``, split settings.
        hp: this run's point of the method's grid.
        seed: seed of the model's initialisation and of every random draw.
        targets: agent-decision counts (ascending) at which to report a checkpoint; the method reports
            at the last whole update unit at or below each (and at 0: the initial model).
        run_dir: the run's directory (the method may keep its own files there).
        checkpoint: the engine's callback.
    """

    setting: SettingView
    hp: dict[str, Any]
    seed: int
    targets: list[int]
    run_dir: Path
    checkpoint: CheckpointFn

    def unit_targets(self, per_unit: int) -> list[int]:
        """Whole update units (of ``per_unit`` decisions each) at each target: ascending, distinct, without 0.

        Raises ``ValueError`` when not even one unit fits in the budget.
        """
        units = sorted({t // max(per_unit, 1) for t in self.targets} - {0})
        if not units:
            raise ValueError(f"the budget ({max(self.targets, default=0):,} agent-decisions) is smaller than one "
                             f"update unit ({per_unit:,})")
        return units


class Method:
    """Base class of a benchmark method (module doc).

    Attributes: ``name`` (as in the tables and ``--methods``), ``family``
    (:data:`FAMILIES`), ``description`` (one line for the docs and ``--help``).
    """

    def __init__(self, name: str, family: str, description: str) -> None:
        if family not in FAMILIES:
            raise ValueError(f"benchmark method {name!r}: family {family!r}; accepted: {', '.join(FAMILIES)}")
        self.name, self.family, self.description = name, family, description

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def applies(self, pop: Population) -> str | None:
        """``None`` when the method applies to ``pop``, else why not (one line)."""
        return None

    def decisions_per_position(self, pop: Population) -> int:
        """Agent-decisions one clock position costs the method."""
        raise NotImplementedError

    def decisions_per_unit(self, pop: Population, hp: dict[str, Any]) -> int:
        """Agent-decisions of one update unit (a batch, a rollout, an env step) at grid point ``hp``."""
        raise NotImplementedError

    def grid(self, setting: SettingView, quick: bool) -> list[dict[str, Any]]:
        """The hyper-parameter points the method is tuned over (:func:`lr_batch_grid`: the same for every method)."""
        raise NotImplementedError

    def run(self, run: MethodRun) -> None:
        """Train on ``run.setting.split_population("train")`` and report checkpoints (module doc)."""
        raise NotImplementedError

    def load_predictor(self, path: Path, setting: SettingView) -> Predictor:
        """The predictor saved at ``path`` by :meth:`run`'s ``save``."""
        raise NotImplementedError


def torch_saver(model: Any) -> Callable[[Path], Path]:
    """``save`` for a :class:`trainers.networks.PublicModel`: :func:`~trainers.networks.save_public_model` to ``.pt``."""
    from trainers.networks import save_public_model

    def save(path: Path) -> Path:
        out = path.with_suffix(".pt")
        save_public_model(out, model)
        return out
    return save


#: Learning-rate factors of every method's grid (times the method's default learning rate).
#: Learning-rate factors of every method's grid around its own default (a third, the default, three times);
#: ``--quick`` uses the last two.  Lower rates were worth trying: on the validation split several methods (ours and
#: PPO) improved early and then degraded at their default rate (BENCHMARKS.md, the lead's measurements).
LR_FACTORS = (1.0 / 3.0, 1.0, 3.0)
QUICK_LR_FACTORS = (1.0, 3.0)


def lr_batch_grid(lr: float, batch_key: str, batches: tuple[int, ...], quick_batches: tuple[int, ...],
                  quick: bool, **fixed: Any) -> list[dict[str, Any]]:
    """The benchmark's grid shape, the same for every method: learning rate x one batch-like size.

    Learning rates ``lr/3``, ``lr`` and ``3 lr`` (``lr``: the method's own default) times
    ``batches`` (two sizes: a smaller one and the method's default): 6 points; ``quick``:
    ``lr`` and ``3 lr`` at ``quick_batches`` (one size).
    """
    sizes = quick_batches if quick else batches
    factors = QUICK_LR_FACTORS if quick else LR_FACTORS
    return [{"lr": f * lr, batch_key: b, **fixed} for b in sizes for f in factors]


def position_batches(setting: SettingView, sizes: tuple[int, ...]) -> tuple[int, ...]:
    """Batch sizes in clock positions, capped by the training split: ``(smaller, larger)`` or, quick, one size.

    The larger is ``min(sizes[-1], positions)``; the smaller ``min(sizes[0], larger // 2)``, so a population
    with few positions per agent (the chunked layout: one stretch of the split each) keeps two distinct sizes.
    """
    n = setting.split_population("train").num_steps
    big = min(sizes[-1], n)
    if len(sizes) == 1:
        return (big,)
    small = min(sizes[0], max(1, big // 2))
    if small == big:
        raise ValueError(f"the training split of {setting.label} has {n} clock position(s); a grid of two batch "
                         "sizes needs at least 2")
    return (small, big)


#: Batch sizes (clock positions per batch) of the grids of ours and the decision-focused methods: a smaller one and
#: the trainer's default; ``--quick``: one small size.
POSITION_BATCHES, QUICK_POSITION_BATCHES = (32, 128), (16,)


def position_grid(setting: SettingView, lr: float, quick: bool) -> list[dict[str, Any]]:
    """:func:`lr_batch_grid` over ``batch_size`` in clock positions (:func:`position_batches`)."""
    return lr_batch_grid(lr, "batch_size", position_batches(setting, POSITION_BATCHES),
                         position_batches(setting, QUICK_POSITION_BATCHES), quick)

#: Registered methods by name (filled by :func:`register`, in registration order: the tables' order).
METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Make ``method`` available as ``METHODS[method.name]`` (``--methods``, the tables)."""
    if not method.name or method.name in METHODS:
        raise ValueError(f"benchmark method {method!r}: name {method.name!r} is empty or already registered")
    METHODS[method.name] = method
    return method
