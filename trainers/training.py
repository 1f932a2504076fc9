"""The training loop: the public model as a stochastic policy over a population.

Each batch draws ``B`` clock positions of the training split and collects a
rollout (:func:`trainers.rollout.collect_rollout`): every agent samples its own
predictions from the public model, decides on them through the population's
batched fast path (:meth:`eq_envs.population.Population.evaluate`) and is
scored by its regret.  The run's update rule (:mod:`trainers.updates`, chosen
by ``objective``/``estimator``) turns the rollout into one or more Adam steps,
aggregating per-agent regrets through the equitable exponent; StepLR decays the
learning rate once per epoch.  The Plain PM (``objective="mse"``) fits the mean
prediction to the truth.

Divergence guard: every optimizer step checks the loss, the gradient norm and
the parameters; anything non-finite stops the run with a one-line
:class:`trainers.errors.DivergenceError` before the epoch's checkpoint or
``model.pt`` is written, so the last good checkpoint survives.

A run directory holds ``config.json``, ``metrics.csv`` (one row per epoch),
``tb/`` (TensorBoard), ``checkpoint.pt`` (model, optimizer, scheduler, RNG, the
update rule's state and history, written atomically every ``checkpoint_every`` epochs) and, at the end,
``model.pt`` (:func:`trainers.networks.save_public_model`).  Calling
:func:`train` again on the same directory resumes from the checkpoint and ends
with exactly the numbers an uninterrupted run gives, also after a SIGKILL at
any point (tested).

A run holds the exclusive lock of its directory (:mod:`trainers.rundir`) from
the moment it writes there until it returns or fails: a second run on the same
directory is refused.  Every setting is checked before the directory is
created or touched; a checkpoint that is unreadable, or already past
``cfg.epochs``, is refused with what to do.
"""
from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from eq_envs.population import Population
from eq_envs.population_file import check_recorded, record_population
from trainers.config import ADDED_SETTINGS, RESUMABLE_CHANGES, ConfigError, TrainConfig
from trainers.errors import DivergenceError
from trainers.networks import PublicModel, build_public_model, load_public_model, save_public_model
from trainers.objectives import equitable_loss
from trainers.rollout import Rollout, collect_rollout
from trainers.rundir import RunDirError, RunDirLock, check_run_dir
from trainers.selection import VAL_FIELDS, Selector, validation_metrics
from trainers.updates import NonFiniteError, UpdateRule, UpdateStats, make_update_rule

log = logging.getLogger("trainers")
CHECKPOINT_VERSION = 1
#: Settings added to :class:`TrainConfig` later, with the value older checkpoints were trained with.
_ADDED_DEFAULTS: dict[str, Any] = ADDED_SETTINGS
# mean_regret / max_agent_regret: raw regret of the deterministic prediction, averaged per agent over the epoch's
# batches (the same quantity for every rule and objective); sample_regret: raw regret of the sampled predictions.
# eq_norm: the norm-form Equitable Objective (sum_m Cbar_m^(q+1))^(1/(q+1)) of the per-agent (weighted) regrets of the
# deterministic prediction -- comparable across rules whatever loss form they optimise (eq_loss is in the rule's form).
# lr: the learning rate used during the epoch.  positions / decisions / grad_steps: cumulative clock positions seen,
# agent-decisions scored and optimizer steps taken.  clip_fraction / approx_kl: eq_ppo's diagnostics (epoch means).
# val_*: the epoch's model on the validation split (trainers/selection.py); selected_epoch: the best epoch so far.
CSV_FIELDS = ("epoch", "loss", "eq_loss", "eq_norm", "mse", "mean_regret", "max_agent_regret", "sample_regret", "lr",
              "policy_std", "seconds", "batches", "positions", "decisions", "grad_steps", "clip_fraction", "approx_kl",
              *VAL_FIELDS)


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained model and the per-epoch history."""

    model: PublicModel
    history: list[dict[str, float]]
    run_dir: Path | None
    #: The epoch whose weights ``model`` holds when a validation criterion selected it (else ``None``).
    selected_epoch: int | None = None
    #: The epoch at which ``patience`` stopped the run early (else ``None``).
    stopped_early: int | None = None


def population_regret_fn(pop: Population, index: Tensor, weighted: bool = True):
    """``pred [M|1, r*B, H] -> regret [M, r*B]`` at clock positions ``index`` tiled ``r`` times.

    With ``weighted`` each agent's regret is multiplied by its group weight
    (the mixed population's 10 / 1 / 0.2).
    """
    B = int(index.numel())
    w = pop.agent_weights.unsqueeze(1) if weighted and any(x != 1.0 for x in pop.weights) else None

    def regret_fn(pred: Tensor) -> Tensor:
        r = int(pred.shape[1]) // B
        reg = pop.regret(pred, index.repeat(r) if r > 1 else index)
        return reg * w if w is not None else reg

    return regret_fn


def resolve_estimator(cfg: TrainConfig, pop: Population) -> str:
    """``auto`` -> ``pathwise`` for differentiable populations, else ``reinforce_weighted``."""
    if cfg.estimator == "auto":
        return "pathwise" if pop.differentiable else "reinforce_weighted"
    if cfg.estimator == "pathwise" and not pop.differentiable:
        raise ConfigError(f"estimator=pathwise needs differentiable agents; population {pop.name} has "
                          f"{[g.kind for g in pop.groups if not g.differentiable]} (use reinforce_weighted)")
    return cfg.estimator


def _warm_start(model: PublicModel, path: str) -> None:
    """Copy the weights of a saved public model with the same architecture into ``model``."""
    if not Path(path).is_file():
        raise ConfigError(f"init_from={path!r}: no such file; accepted: a model.pt written by 'eqpm train'")
    try:
        src = load_public_model(path)
    except ValueError as exc:
        raise ConfigError(f"init_from={path!r}: {exc}") from None
    if src.config != model.config:
        diff = sorted(k for k in set(src.config) | set(model.config) if src.config.get(k) != model.config.get(k))
        raise ConfigError(f"init_from={path!r}: its public model differs from this run's in {', '.join(diff)}; "
                          f"accepted: a model with the same settings")
    model.load_state_dict(src.state_dict())


_CHECKPOINT_KEYS = ("config", "epoch", "model", "optimizer", "scheduler", "generator", "torch_rng", "history")


def _load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's contents, or a one-line :class:`RunDirError` saying how to recover."""
    hint = (f"move it away (e.g. mv {path} {path}.bad) to train this run from scratch, or restore it from a "
            f"backup (checkpoints are replaced atomically, so a damaged one means a disk or copy went wrong)")
    try:
        ck = torch.load(path, weights_only=True, map_location="cpu")
        if not isinstance(ck, dict) or any(k not in ck for k in _CHECKPOINT_KEYS):
            raise ValueError("not an eqpm training checkpoint")
        json.loads(ck["config"])
        int(ck["epoch"])
    except Exception as exc:  # noqa: BLE001 - torch reports a damaged file as any of a dozen exception types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunDirError(f"{path}: cannot be read ({reason[:160]}); {hint}") from None
    return ck


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _open_checkpoint(cfg: TrainConfig, ckpt_path: Path, out: Path) -> dict[str, Any]:
    """The run directory's checkpoint, checked for resuming ``cfg``: the same settings (but RESUMABLE_CHANGES), an
    epoch not past ``cfg.epochs``, the population's data files unchanged; else one line saying what to do."""
    ck = _load_checkpoint(ckpt_path)
    saved = json.loads(ck["config"])
    mine = cfg.to_dict()
    # settings added after a checkpoint was written count as their default there
    diff = sorted(k for k in mine if k not in RESUMABLE_CHANGES and saved.get(k, _ADDED_DEFAULTS.get(k)) != mine[k])
    if diff:
        raise ConfigError(f"{ckpt_path}: checkpoint was written with different settings ({', '.join(diff)}); "
                          f"use another run directory or resume with the same settings")
    if int(ck["epoch"]) > cfg.epochs:
        raise ConfigError(f"{ckpt_path}: the run is already at epoch {int(ck['epoch'])}, past epochs="
                          f"{cfg.epochs}; accepted: epochs >= {int(ck['epoch'])} to continue it, or "
                          f"another run directory")
    check_recorded(out)  # a population's data files must be the ones the run started with
    return ck


def _build_model(cfg: TrainConfig) -> tuple[PublicModel, float | None, torch.optim.Adam,
                                            torch.optim.lr_scheduler.StepLR, torch.Generator]:
    """The run's seeded model (warm-started, its scale set up), the start of a scale anneal, Adam, StepLR and
    the generator of the run's sampling noise and batch order."""
    torch.manual_seed(cfg.seed)
    model = build_public_model(cfg.model_config)
    if cfg.init_from is not None:
        _warm_start(model, cfg.init_from)
    scale_start = _setup_scale(cfg, model)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.lr_gamma)
    return model, scale_start, opt, sched, torch.Generator().manual_seed(cfg.seed)


def _checkpoint(cfg: TrainConfig, epoch: int, model: PublicModel, opt: torch.optim.Optimizer, sched: Any,
                gen: torch.Generator, rule: UpdateRule, selector: Selector, stopped_early: int | None,
                history: list[dict[str, float]]) -> dict[str, Any]:
    """The contents of ``checkpoint.pt`` after ``epoch``."""
    return {"version": CHECKPOINT_VERSION, "config": json.dumps(cfg.to_dict()), "epoch": epoch,
            "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "generator": gen.get_state(), "torch_rng": torch.get_rng_state(), "rule": rule.state_dict(),
            "selector": selector.state_dict(), "stopped_early": stopped_early, "history": history}


def _restore(ck: dict[str, Any], model: PublicModel, opt: torch.optim.Optimizer, sched: Any, gen: torch.Generator,
             rule: UpdateRule, selector: Selector) -> tuple[list[dict[str, float]], int, int | None]:
    """Load a checkpoint's states; return its history, its epoch and the epoch patience stopped at (or None)."""
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    sched.load_state_dict(ck["scheduler"])
    gen.set_state(ck["generator"])
    torch.set_rng_state(ck["torch_rng"])
    rule.load_state_dict(ck.get("rule", {}))
    if "selector" in ck:
        selector.load_state_dict(ck["selector"])
    return [dict(h) for h in ck["history"]], int(ck["epoch"]), ck.get("stopped_early")


def _record_config(cfg: TrainConfig, out: Path) -> None:
    """``config.json``, and a spec population's file record (:func:`eq_envs.population_file.record_population`)."""
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    if isinstance(cfg.population, dict):
        record_population(cfg.population, out)


def _validate_epoch(cfg: TrainConfig, epoch: int, row: dict[str, float], val_pop: Population | None,
                    selector: Selector, model: PublicModel) -> bool:
    """Score the epoch's model on the validation split when due (its columns go into ``row``); True when
    ``patience`` stops the run here."""
    if val_pop is None or not cfg.validate_every or not (epoch % cfg.validate_every == 0 or epoch == cfg.epochs):
        return False
    metrics = validation_metrics(model, val_pop, cfg.q)
    row.update(metrics, val_admissible=float(selector.admissible(metrics)))
    selector.update(epoch, metrics, model)
    row["selected_epoch"] = selector.best_epoch if selector.best_epoch is not None else math.nan
    if selector.should_stop:
        log.info("early stop at epoch %d: no better %s on validation for %d epochs (best: epoch %s)",
                 epoch, selector.criterion, selector.patience, selector.best_epoch)
    return selector.should_stop


def _log_row(writer: Any, row: dict[str, float], epoch: int) -> None:
    """The epoch's finite numbers to TensorBoard (``writer`` None: nothing)."""
    if writer is None:
        return
    for k in CSV_FIELDS[1:]:
        if isinstance(row.get(k), float) and math.isfinite(row[k]):
            writer.add_scalar(f"train/{k}", row[k], epoch)


def _finish(cfg: TrainConfig, model: PublicModel, selector: Selector, history: list[dict[str, float]],
            stopped_early: int | None, out: Path | None) -> int | None:
    """Put the validation-selected weights into ``model`` and write ``model.pt`` if the run finished; return the
    selected epoch (None: the last epoch's weights)."""
    finished = stopped_early is not None or not history or history[-1]["epoch"] == cfg.epochs
    selected = None
    if finished and selector.criterion != "last" and selector.best_state is not None:
        model.load_state_dict(selector.best_state)  # model.pt is the validation-selected epoch
        selected = selector.best_epoch
    model.eval()
    if out is not None and finished:
        save_public_model(out / "model.pt", model)
    return selected


def _set_threads() -> None:
    # Deterministic CPU results need a fixed thread count across resume; respect the user's setting.
    if os.environ.get("EQPM_THREADS"):
        torch.set_num_threads(int(os.environ["EQPM_THREADS"]))


def train(cfg: TrainConfig, run_dir: str | Path | None = None, *, resume: bool = True, progress: bool = False,
          stop_after_epoch: int | None = None, tensorboard: bool = True) -> TrainResult:
    """Train a public model as configured; see the module docstring for the run directory.

    Args:
        cfg: the run's configuration.
        run_dir: where logs and checkpoints go (``None``: nothing is written).
        resume: continue from ``run_dir/checkpoint.pt`` when present (its config
            must equal ``cfg`` except for ``epochs``, which must not be below
            the checkpoint's epoch, and ``memory_budget_mib``, which changes no number).
        progress: show a tqdm progress bar.
        stop_after_epoch: stop (as if interrupted) after this epoch -- for tests.
        tensorboard: write TensorBoard logs in ``run_dir/tb``.

    Raises:
        ConfigError: a setting that is invalid or does not fit the population.
        RunDirError: an unusable run directory or checkpoint
            (:class:`trainers.rundir.RunDirBusy`: another run holds the directory).
        DivergenceError: the run diverged (see the module docstring).
    """
    out = check_run_dir(run_dir) if run_dir is not None else None
    with contextlib.ExitStack() as held:  # holds the run directory's lock, taken in _train's setup
        return _train(cfg, out, held, resume=resume, progress=progress, stop_after_epoch=stop_after_epoch,
                      tensorboard=tensorboard)


def _train(cfg: TrainConfig, out: Path | None, held: contextlib.ExitStack, *, resume: bool, progress: bool,
           stop_after_epoch: int | None, tensorboard: bool) -> TrainResult:
    _set_threads()
    pop = cfg.build_population("train")
    model_cfg = cfg.model_config
    if int(model_cfg.get("horizon", 1)) != pop.horizon:
        raise ConfigError(f"model horizon {model_cfg.get('horizon')} does not match population {pop.name} "
                          f"horizon {pop.horizon}")
    rule = build_update_rule(cfg, pop)
    val_pop = cfg.build_population("val") if cfg.val_fraction > 0 and cfg.validate_every else None
    selector = _make_selector(cfg, val_pop)

    model, scale_start, opt, sched, gen = _build_model(cfg)
    history: list[dict[str, float]] = []
    start_epoch = 1
    saved_epoch: int | None = None  # epoch of the checkpoint in run_dir, for the divergence message
    stopped_early: int | None = None

    ckpt_path = out / "checkpoint.pt" if out is not None else None
    if out is not None:
        held.enter_context(RunDirLock(out))  # every setting is checked above: only now is anything written
        if ckpt_path is not None and ckpt_path.exists() and resume:
            ck = _open_checkpoint(cfg, ckpt_path, out)
            history, saved_epoch, stopped_early = _restore(ck, model, opt, sched, gen, rule, selector)
            start_epoch = saved_epoch + 1
            log.info("resuming %s from epoch %d", out, start_epoch)
        _record_config(cfg, out)

    writer = None
    if out is not None and tensorboard:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out / "tb"), purge_step=start_epoch)

    loop = _EpochLoop(cfg, pop, rule, model, opt, sched, gen, scale_start, selector, val_pop, out, writer, history,
                      saved_epoch, stopped_early)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.epochs, initial=start_epoch - 1, desc=f"{cfg.objective} {pop.name}", unit="epoch")

    for epoch in range(start_epoch, cfg.epochs + 1):
        if loop.stopped_early is not None:  # a resumed run that patience had already stopped
            break
        t0 = time.perf_counter()
        lr = opt.param_groups[0]["lr"]  # the rate used during this epoch (StepLR steps after it)
        acc = loop.batches(epoch, model)
        row = loop.close(epoch, acc, lr, time.perf_counter() - t0)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4g}", regret=f"{row['mean_regret']:.4g}")
        if loop.stopped_early is not None or (stop_after_epoch is not None and epoch >= stop_after_epoch):
            break
    stopped_early = loop.stopped_early

    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    selected = _finish(cfg, model, selector, history, stopped_early, out)
    return TrainResult(model=model, history=history, run_dir=out, selected_epoch=selected, stopped_early=stopped_early)


class _EpochAccumulator:
    """Sums over an epoch's rollouts for its ``metrics.csv`` row.

    Regret columns are *raw* (unweighted) regrets of the *deterministic*
    prediction, the same quantity for every rule and objective (so Plain and
    Equitable runs are comparable); ``sample_regret`` is the raw regret of the
    sampled predictions (NaN for the Plain PM).
    """

    def __init__(self, num_agents: int) -> None:
        self.n = 0
        self.sums = {"loss": 0.0, "eq_loss": 0.0, "mse": 0.0, "sample_regret": 0.0}
        self.extra: dict[str, float] = {}
        self.det = torch.zeros(num_agents, dtype=torch.float64)
        self.det_weighted = torch.zeros(num_agents, dtype=torch.float64)
        self.positions = self.decisions = self.grad_steps = 0

    def add(self, rollout: Rollout, stats: UpdateStats) -> None:
        self.n += 1
        self.sums["loss"] += stats.loss
        self.sums["eq_loss"] += stats.eq_loss
        self.sums["mse"] += stats.mse
        assert rollout.det_regret is not None
        self.det_weighted += rollout.det_regret.double().mean(dim=1)
        self.det += rollout.raw(rollout.det_regret).double().mean(dim=1)
        self.sums["sample_regret"] += float(rollout.raw(rollout.regret).mean()) if rollout.regret is not None \
            else math.nan
        for k, v in stats.extra.items():
            self.extra[k] = self.extra.get(k, 0.0) + float(v)
        self.positions += rollout.batch_size
        self.decisions += rollout.decisions
        self.grad_steps += stats.grad_steps

    def row(self, q: float) -> dict[str, float]:
        per_agent = self.det / self.n
        out = {k: v / self.n for k, v in self.sums.items()}
        out.update({k: v / self.n for k, v in self.extra.items() if k in CSV_FIELDS})
        out["eq_norm"] = float(equitable_loss((self.det_weighted / self.n).clamp_min(0), q, form="norm"))
        out["mean_regret"] = float(per_agent.mean())
        out["max_agent_regret"] = float(per_agent.max())
        return out


class _EpochLoop:
    """A run's epochs: the batch loop and each epoch's record, as :func:`train` runs them.

    Shared with the data-parallel workers (:func:`trainers.distributed.train_worker`),
    which pass their DDP-wrapped model as the policy and their agents' slice of
    the noise; ``stopped_early`` and ``saved_epoch`` are the run's state that
    :meth:`close` updates (``saved_epoch``: the checkpoint's epoch, named by a
    divergence message).
    """

    def __init__(self, cfg: TrainConfig, pop: Population, rule: UpdateRule, model: PublicModel,
                 opt: torch.optim.Optimizer, sched: Any, gen: torch.Generator, scale_start: float | None,
                 selector: Selector, val_pop: Population | None, out: Path | None, writer: Any,
                 history: list[dict[str, float]], saved_epoch: int | None, stopped_early: int | None) -> None:
        self.cfg, self.pop, self.rule, self.model, self.opt, self.sched, self.gen = cfg, pop, rule, model, opt, sched, gen
        self.scale_start, self.selector, self.val_pop, self.out, self.writer = scale_start, selector, val_pop, out, writer
        self.history, self.saved_epoch, self.stopped_early = history, saved_epoch, stopped_early
        self.num_batches = (pop.num_steps + cfg.batch_size - 1) // cfg.batch_size
        if cfg.max_batches is not None:
            self.num_batches = min(self.num_batches, cfg.max_batches)
        self.weights = pop.agent_weights if any(w != 1.0 for w in pop.weights) else None
        self.totals = {k: float(history[-1].get(k, 0)) if history else 0.0
                       for k in ("positions", "decisions", "grad_steps")}

    def batches(self, epoch: int, policy: Any, noise: Callable[[int], Tensor | None] | None = None) -> _EpochAccumulator:
        """Train the epoch's batches with ``policy`` (the model, or a worker's DDP wrapper of it); the
        scheduler steps after them.  ``noise(B)``: a batch's sampling noise (``None``: the collector draws it)."""
        cfg, pop, rule, gen, nb = self.cfg, self.pop, self.rule, self.gen, self.num_batches
        self.model.train()
        perm = torch.randperm(pop.num_steps, generator=gen)
        acc = _EpochAccumulator(pop.num_agents)
        for b in range(nb):
            if self.scale_start is not None:
                _anneal_scale(cfg, self.model, self.scale_start, (epoch - 1) * nb + b, cfg.epochs * nb)
            index = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            x, y = pop.observation(index), pop.truth(index).float()
            eps = None if noise is None else noise(int(index.numel()))
            rollout = collect_rollout(policy, x, population_regret_fn(pop, index), num_agents=pop.num_agents,
                                      num_samples=rule.rollout_samples, y_true=y, generator=gen,
                                      deterministic_regret=True, agent_weights=self.weights, noise=eps)
            try:
                stats = rule.update(policy, self.opt, rollout, generator=gen)
            except NonFiniteError as exc:
                raise DivergenceError(_divergence_message(cfg, rule, epoch, b, nb, exc, self.saved_epoch
                                                          if self.out is not None else -1)) from None
            acc.add(rollout, stats)
        self.sched.step()
        return acc

    def close(self, epoch: int, acc: _EpochAccumulator, lr: float, seconds: float) -> dict[str, float]:
        """The epoch's row (returned and kept in the history): validation when due, TensorBoard,
        ``metrics.csv`` and the checkpoint when due."""
        cfg = self.cfg
        for k in self.totals:
            self.totals[k] += getattr(acc, k)
        row = {"epoch": epoch, **acc.row(cfg.q), "lr": lr, "seconds": seconds, "batches": self.num_batches,
               **self.totals}
        row["policy_std"] = _policy_std(self.model)
        if _validate_epoch(cfg, epoch, row, self.val_pop, self.selector, self.model):
            self.stopped_early = epoch
        self.history.append(row)
        _log_row(self.writer, row, epoch)
        if self.out is not None:
            _write_csv(self.out / "metrics.csv", self.history)
            if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs or self.stopped_early is not None:
                _atomic_save(_checkpoint(cfg, epoch, self.model, self.opt, self.sched, self.gen, self.rule,
                                         self.selector, self.stopped_early, self.history), self.out / "checkpoint.pt")
                self.saved_epoch = epoch
        return row


def build_update_rule(cfg: TrainConfig, pop: Population) -> UpdateRule:
    """The update rule of a run: ``mse`` for the Plain PM, else the (resolved) estimator with its settings."""
    if cfg.objective == "mse":
        return make_update_rule("mse")
    try:
        return make_update_rule(resolve_estimator(cfg, pop), **cfg.rule_kwargs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _make_selector(cfg: TrainConfig, val_pop: Population | None) -> Selector:
    """The run's validation selector; the accuracy guard's limit comes from the reference model on ``val_pop``."""
    limit = None
    if cfg.accuracy_guard is not None:
        assert val_pop is not None and cfg.guard_reference is not None
        path = Path(cfg.guard_reference)
        if not path.is_file():
            raise ConfigError(f"guard_reference={cfg.guard_reference!r}: no such file; accepted: a model.pt written "
                              "by 'eqpm train' (e.g. the Plain PM's)")
        try:
            reference = load_public_model(path)
        except ValueError as exc:
            raise ConfigError(f"guard_reference={cfg.guard_reference!r}: {exc}") from None
        limit = validation_metrics(reference, val_pop, cfg.q)[f"val_{cfg.guard_metric}"] * (1.0 + cfg.accuracy_guard)
    return Selector(cfg.selection_criterion, cfg.patience, limit, cfg.guard_metric)


def _setup_scale(cfg: TrainConfig, model: PublicModel) -> float | None:
    """Freeze the policy's scale for ``fixed``/``anneal``; return the start value of an anneal (else None)."""
    if cfg.scale == "learned":
        return None
    head = model.head
    try:
        start = float(head.scale_value().mean())
    except ValueError as exc:
        raise ConfigError(f"scale={cfg.scale!r}: {exc}") from None
    head.raw_log_std.requires_grad_(False)
    return start if cfg.scale == "anneal" else None


def _anneal_scale(cfg: TrainConfig, model: PublicModel, start: float, batch: int, total: int) -> None:
    assert cfg.scale_final is not None
    frac = batch / max(total - 1, 1)
    model.head.set_scale(start * (cfg.scale_final / start) ** frac)


def _policy_std(model: PublicModel) -> float:
    try:
        return float(model.head.scale_value().mean())
    except ValueError:  # a state-dependent scale has no single value
        return math.nan


def _divergence_message(cfg: TrainConfig, rule: UpdateRule, epoch: int, batch: int, num_batches: int,
                        exc: NonFiniteError, saved_epoch: int | None) -> str:
    fixes = [f"a lower learning rate (lr is {cfg.learning_rate:g}; try {cfg.learning_rate / 10:g})"]
    if rule.form == "power" and rule.q > 0:
        fixes.append(f"the norm form (form='norm'; the power form sum C^(q+1) overflows at q+1 = {cfg.q + 1:g})")
    kept = {-1: "nothing was written", None: "no checkpoint was written"}.get(
        saved_epoch, f"the last good checkpoint (epoch {saved_epoch}) is kept")
    return (f"training diverged in epoch {epoch}, batch {batch + 1}/{num_batches}: non-finite {exc.what} "
            f"({exc.value}); {kept}; likely fix: " + " or ".join(fixes))


def _write_csv(path: Path, history: list[dict[str, float]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        for row in history:
            w.writerow({k: row.get(k, "") for k in CSV_FIELDS})
    os.replace(tmp, path)
