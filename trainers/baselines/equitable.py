"""Our update rules (and the Plain PM) as benchmark methods, trained by :func:`trainers.training.train`.

Each method is one update rule of :mod:`trainers.updates` with fixed rule
settings; the benchmark tunes its learning rate and its batch (clock positions
per rollout).  The run is an ordinary training run directory (``train/``:
``metrics.csv`` with the cumulative ``positions``, ``decisions`` and
``grad_steps``, ``checkpoint.pt``); checkpoints are taken by stopping
:func:`~trainers.training.train` after an epoch (``stop_after_epoch``) and
resuming it, so the benchmark changes nothing in the training loop.

Budget: one batch of ``B`` positions costs ``K·M·B`` agent-decisions (``M·B``
for the Plain PM, which scores only its deterministic prediction, for the
log).  A run takes the whole batches that fit in the budget; "epochs" of
``max_batches`` batches (each from a fresh permutation of the positions) are
sized so that every checkpoint falls on an epoch's end.  The learning rate is
constant (StepLR never steps), as for every other method of the benchmark,
and the trainer's own validation is off (``validate_every=0``,
``selection="last"``): the benchmark validates and chooses checkpoints for
every method alike.
"""
from __future__ import annotations

import math
from functools import reduce
from pathlib import Path
from typing import Any

import torch

from eq_envs.population import Population
from trainers.baselines.base import Counts, Method, MethodRun, Predictor, SettingView, position_grid, torch_saver
from trainers.networks import build_public_model, load_public_model
from trainers.training import train


class UpdateRuleMethod(Method):
    """One of our update rules with fixed settings (``objective="mse"``: the Plain PM).

    Args:
        name: the method's name (the rule's, or ``"mse"``).
        description: one line for the docs.
        settings: :class:`~trainers.config.TrainConfig` settings of the rule
            (``estimator``, ``num_samples``, ``baseline``, ``form``, ``update``, ``objective``).
    """

    def __init__(self, name: str, description: str, **settings: Any) -> None:
        super().__init__(name, "ours", description)
        self.settings = settings
        self.equitable = settings.get("objective", "equitable") == "equitable"

    @property
    def samples(self) -> int:
        """``K``: decisions per agent and position (1 for the Plain PM's deterministic prediction)."""
        return int(self.settings.get("num_samples", 1)) if self.equitable else 1

    def applies(self, pop: Population) -> str | None:
        if self.settings.get("estimator") == "pathwise" and not pop.differentiable:
            kinds = sorted({g.kind for g in pop.groups if not g.differentiable})
            return f"the regret of {', '.join(kinds)} agents is not differentiable in the prediction"
        return None

    def decisions_per_position(self, pop: Population) -> int:
        return self.samples * pop.num_agents

    def decisions_per_unit(self, pop: Population, hp: dict[str, Any]) -> int:
        return self.decisions_per_position(pop) * int(hp["batch_size"])

    def grid(self, setting: SettingView, quick: bool) -> list[dict[str, Any]]:
        # around the rule's own default learning rate (eq_ppo's differs from the one-step rules')
        return position_grid(setting, setting.config(**self.train_settings(setting)).learning_rate, quick)

    def train_settings(self, setting: SettingView) -> dict[str, Any]:
        """The rule's TrainConfig settings for ``setting`` (``q`` only for equitable rules)."""
        return {**self.settings, **({"q": setting.q} if self.equitable else {})}

    def run(self, run: MethodRun) -> None:
        pop = run.setting.split_population("train")
        batch = int(run.hp["batch_size"])
        full = pop.num_steps // batch  # whole batches in one pass over the positions
        if full < 1:
            raise ValueError(f"{self.name}: batch_size {batch} exceeds the {pop.num_steps} training positions")
        units = run.unit_targets(self.decisions_per_unit(pop, run.hp))
        per_epoch = max(d for d in range(1, full + 1) if reduce(math.gcd, units) % d == 0)
        stops = [u // per_epoch for u in units]
        # the benchmark validates and chooses checkpoints itself, the same way for every method: no validation
        # inside the trainer (validate_every=0), and the final model is the last one (selection="last")
        cfg = run.setting.config(**self.train_settings(run.setting), batch_size=batch, lr=float(run.hp["lr"]),
                                 epochs=stops[-1], max_batches=per_epoch, seed=run.seed,
                                 checkpoint_every=reduce(math.gcd, stops), step_size=stops[-1] + 1, selection="last",
                                 validate_every=0)
        torch.manual_seed(cfg.seed)  # the initial model, drawn exactly as train() draws it
        initial = build_public_model(cfg.model_config).eval()
        run.checkpoint(Counts(0, 0, 0, 0.0), initial, torch_saver(initial))
        for stop in stops:
            res = train(cfg, run.run_dir / "train", stop_after_epoch=stop, tensorboard=False)
            last = res.history[-1]
            counts = Counts(int(last["positions"]), int(last["decisions"]), int(last["grad_steps"]),
                            float(sum(h["seconds"] for h in res.history)))
            run.checkpoint(counts, res.model.eval(), torch_saver(res.model))

    def load_predictor(self, path: Path, setting: SettingView) -> Predictor:
        return load_public_model(path)
