"""The per-sample loop reference of benchmarks/ equals the batched fast path (regrets and REINFORCE gradient)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from eq_envs.presets import build_population
from trainers.config import default_model
from trainers.estimators import estimate
from trainers.networks import build_public_model
from trainers.training import population_regret_fn

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "loop_reference.py"
_spec = importlib.util.spec_from_file_location("loop_reference", _PATH)
loopref = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("loop_reference", loopref)
_spec.loader.exec_module(loopref)


@pytest.mark.parametrize("layout", ["shared", "chunked"])
@pytest.mark.parametrize("name", ["ev-similar", "ev-different"])
def test_loop_regret_equals_population_regret(name: str, layout: str) -> None:
    pop = build_population(name, split="test", layout=layout)
    rng = np.random.default_rng(0)
    index = rng.integers(0, pop.num_steps, 6)
    # random predictions, some negative (the extra-slot rule), and ties (stable order)
    pred = rng.uniform(-2, 12, (pop.num_agents, 6, 12))
    pred[:, 0] = np.round(pred[:, 0])
    want = pop.regret(torch.from_numpy(pred), torch.from_numpy(index)).numpy()
    got = loopref.loop_population_regret(pop, pred, index)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)
    shared = pred[:1]  # one prediction for every agent
    np.testing.assert_allclose(loopref.loop_population_regret(pop, shared, index),
                               pop.regret(torch.from_numpy(shared), torch.from_numpy(index)).numpy(),
                               rtol=1e-12, atol=1e-9)


def test_loop_reinforce_gradient_equals_the_paper_estimator() -> None:
    pop = build_population("ev-similar", layout="shared")
    index = torch.arange(40, 46)
    x = pop.observation(index)
    torch.manual_seed(0)
    model = build_public_model(default_model("ev-similar"))
    q = 2.0
    est = estimate(model, x, population_regret_fn(pop, index), q=q, estimator="reinforce_paper",
                   num_agents=pop.num_agents, generator=torch.Generator().manual_seed(3))
    est.surrogate.backward()
    g_ours = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double()
    model.zero_grad()
    dist = model.distribution(x)
    eps = torch.randn((1, pop.num_agents, 6, 12), generator=torch.Generator().manual_seed(3))
    pred = (dist.base_dist.loc + dist.base_dist.scale * eps).detach()[0]
    ref = loopref.loop_reinforce_paper(dist, pop, index.tolist(), q, pred)
    g_loop = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double()
    np.testing.assert_allclose(ref["regret"], est.regret[0].numpy(), atol=1e-9)
    assert ref["F"] == pytest.approx(est.eq_loss, rel=1e-9)
    assert float((g_ours - g_loop).norm() / g_ours.norm()) < 1e-4
