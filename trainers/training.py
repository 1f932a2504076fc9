"""The training loop: the public model as a stochastic policy over a population.

Each batch draws ``B`` clock positions of the training split, samples every
agent's prediction from the public model (independently per agent), drives all
agents through the population's batched fast path
(:meth:`eq_envs.population.Population.evaluate`), aggregates per-agent regrets
through the equitable exponent and steps Adam; StepLR decays the learning rate
once per epoch.  The Plain PM (``objective="mse"``) fits the mean prediction to
the truth.

A run directory holds ``config.json``, ``metrics.csv`` (one row per epoch),
``tb/`` (TensorBoard), ``checkpoint.pt`` (model, optimizer, scheduler, RNG and
history, written atomically every ``checkpoint_every`` epochs) and, at the end,
``model.pt`` (:func:`trainers.networks.save_public_model`).  Calling
:func:`train` again on the same directory resumes from the checkpoint and ends
with exactly the numbers an uninterrupted run gives (tested).
"""
from __future__ import annotations

import csv
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from eq_envs.population import Population
from trainers.config import ADDED_SETTINGS, ConfigError, TrainConfig
from trainers.estimators import estimate
from trainers.networks import PublicModel, build_public_model, load_public_model, save_public_model
from trainers.objectives import equitable_loss, mse_loss

log = logging.getLogger("trainers")
CHECKPOINT_VERSION = 1
#: Settings added to :class:`TrainConfig` later, with the value older checkpoints were trained with.
_ADDED_DEFAULTS = ADDED_SETTINGS
# eq_norm: the norm-form Equitable Objective (sum_m Cbar_m^(q+1))^(1/(q+1)) of the epoch's per-agent mean
# regrets -- comparable across estimators whatever loss form they optimise (eq_loss is in the estimator's form).
CSV_FIELDS = ("epoch", "loss", "eq_loss", "eq_norm", "mse", "mean_regret", "max_agent_regret", "lr", "seconds",
              "batches")


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained model and the per-epoch history."""

    model: PublicModel
    history: list[dict[str, float]]
    run_dir: Path | None


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


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
            must equal ``cfg`` except for ``epochs``).
        progress: show a tqdm progress bar.
        stop_after_epoch: stop (as if interrupted) after this epoch -- for tests.
        tensorboard: write TensorBoard logs in ``run_dir/tb``.
    """
    _set_threads()
    pop = cfg.build_population("train")
    model_cfg = cfg.model_config
    if int(model_cfg.get("horizon", 1)) != pop.horizon:
        raise ConfigError(f"model horizon {model_cfg.get('horizon')} does not match population {pop.name} "
                          f"horizon {pop.horizon}")
    estimator = resolve_estimator(cfg, pop) if cfg.objective == "equitable" else "mse"

    torch.manual_seed(cfg.seed)
    model = build_public_model(model_cfg)
    if cfg.init_from is not None:
        _warm_start(model, cfg.init_from)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.lr_gamma)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    start_epoch = 1

    out = Path(run_dir) if run_dir is not None else None
    ckpt_path = out / "checkpoint.pt" if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        if ckpt_path is not None and ckpt_path.exists() and resume:
            ck = torch.load(ckpt_path, weights_only=True)
            saved = json.loads(ck["config"])
            mine = cfg.to_dict()
            # settings added after a checkpoint was written count as their default there
            diff = sorted(k for k in mine if k != "epochs" and saved.get(k, _ADDED_DEFAULTS.get(k)) != mine[k])
            if diff:
                raise ConfigError(f"{ckpt_path}: checkpoint was written with different settings ({', '.join(diff)}); "
                                  f"use another run directory or resume with the same settings")
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            gen.set_state(ck["generator"])
            torch.set_rng_state(ck["torch_rng"])
            history = [dict(h) for h in ck["history"]]
            start_epoch = int(ck["epoch"]) + 1
            log.info("resuming %s from epoch %d", out, start_epoch)
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))

    writer = None
    if out is not None and tensorboard:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out / "tb"), purge_step=start_epoch)

    steps = pop.num_steps
    num_batches = (steps + cfg.batch_size - 1) // cfg.batch_size
    if cfg.max_batches is not None:
        num_batches = min(num_batches, cfg.max_batches)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=cfg.epochs, initial=start_epoch - 1, desc=f"{cfg.objective} {pop.name}", unit="epoch")

    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(steps, generator=gen)
        sums = {"loss": 0.0, "eq_loss": 0.0, "mse": 0.0}
        regret_sum = torch.zeros(pop.num_agents, dtype=torch.float64)
        for b in range(num_batches):
            index = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            x, y = pop.observation(index), pop.truth(index).float()
            opt.zero_grad(set_to_none=True)
            if estimator == "mse":
                mean_pred = model.mean(x)
                loss_t = mse_loss(mean_pred, y)
                loss_t.backward()
                sums["loss"] += float(loss_t.detach())
                sums["mse"] += float(loss_t.detach())
                with torch.no_grad():  # logged only: the regret of the deterministic prediction
                    pred = mean_pred.detach().double()
                    regret_sum += pop.regret(pred if pred.dim() == 3 else pred.unsqueeze(0), index).mean(dim=1)
            else:
                est = estimate(model, x, population_regret_fn(pop, index), q=cfg.q, estimator=estimator,
                               num_agents=pop.num_agents, beta=cfg.beta, y_true=y, baseline=cfg.baseline,
                               credit=cfg.credit, num_samples=cfg.num_samples, form=cfg.form, generator=gen)
                est.surrogate.backward()
                sums["loss"] += est.loss
                sums["eq_loss"] += est.eq_loss
                sums["mse"] += est.mse
                regret_sum += est.mean_regret.double()
            opt.step()
        sched.step()
        per_agent = regret_sum / num_batches
        row = {"epoch": epoch, "loss": sums["loss"] / num_batches, "eq_loss": sums["eq_loss"] / num_batches,
               "mse": sums["mse"] / num_batches,
               "eq_norm": float(equitable_loss(per_agent.clamp_min(0), cfg.q, form="norm")),
               "mean_regret": float(per_agent.mean()),
               "max_agent_regret": float(per_agent.max()), "lr": opt.param_groups[0]["lr"],
               "seconds": time.perf_counter() - t0, "batches": num_batches}
        history.append(row)
        if writer is not None:
            for k in ("loss", "eq_loss", "mse", "mean_regret", "max_agent_regret", "lr"):
                writer.add_scalar(f"train/{k}", row[k], epoch)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4g}", regret=f"{row['mean_regret']:.4g}")
        if out is not None:
            _write_csv(out / "metrics.csv", history)
            if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs:
                _atomic_save({"version": CHECKPOINT_VERSION, "config": json.dumps(cfg.to_dict()), "epoch": epoch,
                              "model": model.state_dict(), "optimizer": opt.state_dict(),
                              "scheduler": sched.state_dict(), "generator": gen.get_state(),
                              "torch_rng": torch.get_rng_state(), "history": history}, ckpt_path)
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            break

    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    model.eval()
    if out is not None and (not history or history[-1]["epoch"] == cfg.epochs):
        save_public_model(out / "model.pt", model)
    return TrainResult(model=model, history=history, run_dir=out)


def _write_csv(path: Path, history: list[dict[str, float]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        w.writeheader()
        for row in history:
            w.writerow({k: row.get(k, "") for k in CSV_FIELDS})
    os.replace(tmp, path)
