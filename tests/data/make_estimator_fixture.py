"""Writes ``estimator_gradients.json.gz``: gradients of the estimators as they were before the rollout/update-rule
refactor (commit 93bc21c, ``trainers.estimators.estimate``), on fixed seeds and real populations.

``tests/test_update_rules.py`` checks that the update rules reproduce these numbers.  The clock positions, public
inputs and truths are stored too, so the check does not depend on how a population maps clock positions to time.
Kept for provenance; re-running it on later code would only copy the new numbers, so do not regenerate the file
unless the gradients are meant to change (and say why in the commit).
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path

import torch

from eq_envs.presets import build_population
from trainers.estimators import estimate
from trainers.networks import build_public_model
from trainers.training import population_regret_fn

CASES = [
    # population, layout, estimator, extra settings
    ("dc-different-different-lambda", "shared", "pathwise", dict(q=2.0)),
    ("dc-different-different-lambda", "chunked", "pathwise", dict(q=2.0, num_samples=2, form="power")),
    ("dc-different-different-lambda", "chunked", "pathwise", dict(q=0.0, beta=0.3)),
    ("dc-different-different-lambda", "shared", "reinforce_paper", dict(q=1.0)),
    ("dc-different-different-lambda", "chunked", "reinforce_weighted", dict(q=3.0)),
    ("dc-different-different-lambda", "shared", "reinforce_weighted", dict(q=3.0, credit="linear", baseline="loo",
                                                                           num_samples=3)),
    ("ev-similar", "shared", "reinforce_weighted", dict(q=19.0, baseline="loo", num_samples=2)),
    ("ev-similar", "chunked", "reinforce_weighted", dict(q=19.0, baseline="none", beta=0.5)),
    ("ev-different", "shared", "reinforce_paper", dict(q=19.0, form="norm", num_samples=2)),
    ("ev-similar", "shared", "reinforce_weighted", dict(q=0.0, credit="linear")),
    ("mixed", "shared", "reinforce_weighted", dict(q=4.0, num_samples=2, baseline="loo")),
]
BATCH = 16


def model_for(pop) -> torch.nn.Module:
    head = "lognormal" if pop.name.startswith("dc-") else "gaussian"
    return build_public_model({"backbone": "mlp", "backbone_kwargs": {"hidden": [8]}, "head": head,
                               "head_kwargs": {"init_mean": 5.0}, "seq_len": 12, "horizon": pop.horizon})


def main() -> None:
    out = []
    for i, (name, layout, est, kw) in enumerate(CASES):
        pop = build_population(name, split="train", layout=layout, val_fraction=0.0)  # the whole train part, as then
        torch.manual_seed(100 + i)
        model = model_for(pop)
        index = torch.randperm(pop.num_steps, generator=torch.Generator().manual_seed(300 + i))[:BATCH]
        gen = torch.Generator().manual_seed(200 + i)  # the sampling noise
        x, y = pop.observation(index), pop.truth(index).float()
        e = estimate(model, x, population_regret_fn(pop, index), estimator=est, num_agents=pop.num_agents,
                     y_true=y, generator=gen, **kw)
        e.surrogate.backward()
        grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double()
        out.append({"population": name, "layout": layout, "estimator": est, "settings": kw, "batch": BATCH,
                    "model_seed": 100 + i, "generator_seed": 200 + i, "index": index.tolist(),
                    "x": x.double().tolist(), "truth": pop.truth(index).tolist(), "loss": e.loss, "eq_loss": e.eq_loss,
                    "mean_regret": e.mean_regret.double().tolist(), "gradient": grad.tolist()})
    path = Path(__file__).with_name("estimator_gradients.json.gz")
    with gzip.open(path, "wt") as fh:
        json.dump(out, fh)
    print(f"wrote {path} ({len(out)} cases)")


if __name__ == "__main__":
    main()
