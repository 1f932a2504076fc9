"""General agents: the PuLP backend on HiGHS (re-use, processes, checks) and Gymnasium envs as agent groups."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from agents import SlotMILPAgent
from agents.gym_env_group import ContractError, GymEnvAgentGroup
from agents.pulp_backend import cbc_solver
from eq_envs.agent_env import DownstreamAgentEnv
from eq_envs.population import Population
from eq_envs.presets import build_population


def _milp(**kw) -> SlotMILPAgent:
    caps = np.ones((3, 12))
    caps[:, 8:] = 0.5
    return SlotMILPAgent([[8.0, 20.0, 3.0], [3.0], [12.0, 1.0]], [[3.3], [7.2], [2.0]], horizon=12, caps=caps, **kw)


def _instances(B: int = 24, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    truth = 10 * torch.rand(B, 12, generator=g, dtype=torch.float64) - 1  # some negative prices
    pred = truth + torch.randn(3, B, 12, generator=g, dtype=torch.float64)
    return pred, truth, torch.arange(B)


def test_highs_with_model_reuse_equals_cbc_and_fresh_solves() -> None:
    pred, truth, idx = _instances()
    ref = _milp(solver=cbc_solver(), workers=1).evaluate(pred, truth, idx)
    reuse = _milp(workers=1)
    fresh = _milp(workers=1)
    fresh.objective = lambda signal, ctx: None  # every instance formulated and solved afresh
    for group in (reuse, fresh):
        for _ in range(2):  # the second call re-uses the models kept from the first
            ev = group.evaluate(pred, truth, idx)
            torch.testing.assert_close(ev.regret, ref.regret, rtol=0, atol=1e-9)
            torch.testing.assert_close(ev.cost, ref.cost, rtol=0, atol=1e-9)
    assert len(reuse._models) == 6 and "_models" not in fresh.__dict__  # one model per distinct context


def test_process_pool_gives_the_in_process_decisions() -> None:
    pred, truth, idx = _instances(B=48, seed=1)
    serial = _milp(workers=1).evaluate(pred, truth, idx)
    pooled = _milp(workers=2)
    pooled.min_parallel = 16
    torch.testing.assert_close(pooled.evaluate(pred, truth, idx).regret, serial.regret, rtol=0, atol=1e-9)


def test_wrong_objective_hook_is_refused() -> None:
    group = _milp(workers=1)
    group.objective = lambda signal, ctx: 2 * signal * ctx["slot_energy"]
    with pytest.raises(TypeError, match="objective\\(\\) does not match"):
        group.evaluate(*_instances(B=2))


def _dc_envs(pop: Population, agents: range, **kw) -> GymEnvAgentGroup:
    return GymEnvAgentGroup([lambda m=m: DownstreamAgentEnv(pop, agent=m, episode_length=1) for m in agents],
                            horizon=pop.horizon, **kw)


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_gym_envs_as_agents_match_the_batched_path(vectorization: str) -> None:
    pop = build_population("ev-similar", layout="shared")
    group = _dc_envs(pop, range(5), vectorization=vectorization)
    wrapped = Population("as-envs", pop.signal, "train", pop.split_range, [group], horizon=12, layout="shared")
    idx = torch.tensor([0, 7, 300, pop.num_steps - 1])
    g = torch.Generator().manual_seed(2)
    pred = pop.truth(idx).unsqueeze(0) + 3 * torch.randn(5, 4, 12, generator=g, dtype=torch.float64)
    full = torch.cat([pred, torch.zeros(pop.num_agents - 5, 4, 12, dtype=torch.float64)])
    expected = pop.evaluate(full, idx)
    got = wrapped.evaluate(pred, idx)
    group.close()
    torch.testing.assert_close(got.regret, expected.regret[:5], rtol=0, atol=1e-12)
    torch.testing.assert_close(got.cost, expected.cost[:5], rtol=0, atol=1e-12)
    assert got.decisions[0].shape == (5, 4, 12)


def test_env_breaking_the_contract_is_named() -> None:
    import gymnasium as gym

    class Liar(gym.Env):
        observation_space = gym.spaces.Box(0, 1, (1,))
        action_space = gym.spaces.Box(0, 10, (12,))

        def reset(self, *, seed=None, options=None):
            return np.zeros(1, dtype=np.float32), {}

        def step(self, action):
            return np.zeros(1, dtype=np.float32), 1.0, True, False, {"regret": 0.5}

    group = GymEnvAgentGroup([Liar, Liar], horizon=12)
    with pytest.raises(ContractError, match="is not -info\\['regret'\\]"):
        group.evaluate(torch.zeros(1, 1, 12), torch.zeros(1, 12), torch.zeros(1, dtype=torch.long))
    with pytest.raises(ContractError, match="Box of shape \\(1,\\)"):
        GymEnvAgentGroup([Liar], horizon=1)
