"""SPO+ and perturbed Fenchel-Young (PFYL) as benchmark methods: the public model trained through the slot problem.

The predictor is our public model (the population's default network,
initialised as :func:`trainers.training.train` initialises it); its
deterministic prediction (the mean) is the predicted cost of every agent's
slot problem and is trained with the loss of :mod:`trainers.baselines.dfl`
(PyEPO's ``SPOPlus`` / ``perturbedFenchelYoung`` on the top-k ``optModel``) by
Adam at a constant learning rate, one step per batch of clock positions, in
epochs of whole batches drawn from a permutation of the training positions.

Budget: a batch of ``B`` positions is ``M·B`` instances, and costs ``M·B``
agent-decisions for SPO+ (one solve at ``2ĉ - c`` each) or ``n·M·B`` for PFYL
(``n = 10`` perturbed solves each).  The optimal solutions of the true costs
are not counted, as the oracle side of the regret is not counted for any method.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from eq_envs.population import Population
from trainers.baselines.base import Counts, Method, MethodRun, Predictor, SettingView, position_grid, torch_saver
from trainers.baselines.dfl import SlotDFLLoss, check_slot_population
from trainers.networks import build_public_model, load_public_model
from trainers.updates import apply_gradients

#: PFYL's perturbations: PyEPO's defaults (10 draws, sigma 1.0 in signal units; the paper preset's signals span [0, 10]).
PFYL_SAMPLES, PFYL_SIGMA = 10, 1.0


class DFLMethod(Method):
    """The public model trained with ``"spo+"`` or ``"pfyl"`` on the slot agents' problems."""

    def __init__(self, kind: str, name: str, description: str) -> None:
        super().__init__(name, "dfl", description)
        self.kind = kind

    def applies(self, pop: Population) -> str | None:
        return check_slot_population(pop)

    @property
    def solves(self) -> int:
        return PFYL_SAMPLES if self.kind == "pfyl" else 1

    def decisions_per_position(self, pop: Population) -> int:
        return self.solves * pop.num_agents

    def decisions_per_unit(self, pop: Population, hp: dict[str, Any]) -> int:
        return self.decisions_per_position(pop) * int(hp["batch_size"])

    def grid(self, setting: SettingView, quick: bool) -> list[dict[str, Any]]:
        # Adam's default rate for our public model on these populations (TrainConfig's 1e-3)
        return position_grid(setting, setting.config().learning_rate, quick)

    def run(self, run: MethodRun) -> None:
        pop = run.setting.split_population("train")
        batch = int(run.hp["batch_size"])
        full = pop.num_steps // batch
        if full < 1:
            raise ValueError(f"{self.name}: batch_size {batch} exceeds the {pop.num_steps} training positions")
        units = run.unit_targets(self.decisions_per_unit(pop, run.hp))
        torch.manual_seed(run.seed)
        model = build_public_model(run.setting.config().model_config)
        loss_fn = SlotDFLLoss(self.kind, pop.horizon, n_samples=PFYL_SAMPLES, sigma=PFYL_SIGMA, seed=run.seed)
        opt = torch.optim.Adam(model.parameters(), lr=float(run.hp["lr"]))
        params = [p for p in model.parameters() if p.requires_grad]
        gen = torch.Generator().manual_seed(run.seed)
        model.eval()
        run.checkpoint(Counts(0, 0, 0, 0.0), model, torch_saver(model))
        done, wall, perm = 0, 0.0, torch.empty(0, dtype=torch.long)
        for target in units:
            t0 = time.perf_counter()
            model.train()
            while done < target:
                b = done % full
                if b == 0:
                    perm = torch.randperm(pop.num_steps, generator=gen)
                index = perm[b * batch:(b + 1) * batch]
                loss = loss_fn(pop, index, model.mean(pop.observation(index)))
                apply_gradients(opt, loss, params)  # the trainer's guarded step (non-finite -> NonFiniteError)
                done += 1
            wall += time.perf_counter() - t0
            model.eval()
            run.checkpoint(Counts(done * batch, done * batch * self.decisions_per_position(pop), done, wall), model,
                           torch_saver(model))

    def load_predictor(self, path: Path, setting: SettingView) -> Predictor:
        return load_public_model(path)
