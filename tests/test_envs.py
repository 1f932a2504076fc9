"""Gymnasium and PettingZoo environments: official checkers, seeding, batched path, SB3 client."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import parallel_api_test, parallel_seed_test

import eq_envs
from agents import AgentGroup, SlotMILPAgent
from eq_envs.agent_env import DownstreamAgentEnv
from eq_envs.population import Population
from eq_envs.population_env import PopulationParallelEnv
from eq_envs.presets import PAPER_POPULATIONS, build_population, wasserstein_report


@pytest.mark.parametrize("env_id", sorted(eq_envs.ENV_IDS))
def test_registered_envs_pass_gymnasium_checker(env_id: str) -> None:
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert reward == -info["regret"] and info["regret"] >= 0
    assert {"regret", "cost", "oracle_cost", "decision", "clamped"} <= set(info)


@pytest.mark.parametrize("env_id", sorted(eq_envs.ENV_IDS))
def test_make_vec(env_id: str) -> None:
    envs = gym.make_vec(env_id, num_envs=3, vectorization_mode="sync")
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (3, 12) and obs.dtype == np.float32
    _, rewards, _, _, _ = envs.step(envs.action_space.sample())
    assert rewards.shape == (3,) and (rewards <= 0).all()
    envs.close()


def _rollout(env: gym.Env, seed: int, steps: int = 30) -> list[float]:
    env.reset(seed=seed)
    env.action_space.seed(seed)
    out = []
    for _ in range(steps):
        obs, r, term, trunc, _ = env.step(env.action_space.sample())
        out.append(r)
        if term or trunc:
            env.reset()
    return out


def test_same_seed_same_rollout() -> None:
    a, b = gym.make("eq_envs/EVCharging-v0"), gym.make("eq_envs/EVCharging-v0")
    assert _rollout(a, 7) == _rollout(b, 7)
    assert _rollout(a, 7) != _rollout(a, 8)


@pytest.mark.parametrize("name", ["dc-different-different-lambda", "ev-similar", "mixed"])
def test_population_env_passes_pettingzoo_tests(name: str) -> None:
    env = PopulationParallelEnv(name, episode_length=8)
    parallel_api_test(env, num_cycles=20)
    parallel_seed_test(lambda: PopulationParallelEnv(name, episode_length=8))


@pytest.mark.parametrize("layout", ["shared", "chunked"])
@pytest.mark.parametrize("name", ["dc-similar-different-lambda", "ev-different", "phone", "mixed"])
def test_batched_fast_path_equals_step(name: str, layout: str) -> None:
    """Population.evaluate over a batch gives exactly what step() gives step by step."""
    env = PopulationParallelEnv(name, episode_length=16, layout=layout)
    pop = env.population
    obs, _ = env.reset(seed=11)
    start = env._start
    rng = np.random.default_rng(0)
    lo, hi = pop.signal_bounds
    preds = rng.uniform(lo, hi, (pop.num_agents, 16, pop.horizon)).astype(np.float32)
    step_regret = []
    for b in range(16):
        _, rewards, _, _, infos = env.step({a: preds[m, b] for m, a in enumerate(env.possible_agents)})
        step_regret.append([infos[a]["regret"] for a in env.possible_agents])
    batch = pop.evaluate(torch.from_numpy(preds.astype(np.float64)), torch.arange(start, start + 16))
    np.testing.assert_array_equal(batch.regret.numpy(), np.array(step_regret).T)


def test_single_env_step_equals_population_batch() -> None:
    env = DownstreamAgentEnv("dc-different-different-lambda", agent=7, episode_length=10)
    env.reset(seed=1)
    start = env._start
    actions = np.linspace(1, 9, 10, dtype=np.float32).reshape(10, 1)
    got = [env.step(a)[1] for a in actions]
    batch = env.population.regret(torch.from_numpy(actions.astype(np.float64)).unsqueeze(0),
                                  torch.arange(start, start + 10))
    np.testing.assert_array_equal(-batch[7].numpy(), np.array(got))


def test_observation_is_last_twelve_values_and_truth_is_next() -> None:
    pop = build_population("ev-similar", split="test", layout="shared")
    t = int(pop.time_step(torch.tensor([5]))[0])
    np.testing.assert_allclose(pop.observation([5])[0].numpy(), pop.signal[t - 12:t].astype(np.float32))
    np.testing.assert_array_equal(pop.truth([5])[0].numpy(), pop.signal[t:t + 12])
    assert pop.split_range[0] > 0  # test split comes after train in time


def test_chunked_layout_gives_each_agent_its_own_equal_stretch_of_time() -> None:
    pop = build_population("dc-different-same-lambda", split="train", layout="chunked")
    assert build_population("dc-different-same-lambda").layout == "shared"  # the default is the paper's
    start, stop = pop.split_range
    rows = np.arange(start + 12, stop - 1 + 1)  # windows of 12 inputs and 1 step inside the split
    S = len(rows) // 50
    assert pop.num_steps == S
    t = pop.time_step(torch.arange(S)).numpy()  # [M, S]
    np.testing.assert_array_equal(t, rows[: 50 * S].reshape(50, S))  # agent m: rows[m S : (m + 1) S]
    # no stretch overlaps another (no wrap onto agent 0's hours), every agent has S positions
    assert len(np.unique(t)) == t.size and (np.diff(t, axis=1) == 1).all()
    obs, truth = pop.observation([3]), pop.truth([3])
    assert obs.shape == (50, 1, 12) and truth.shape == (50, 1, 1)
    m, tm = 17, int(t[17, 3])
    np.testing.assert_array_equal(truth[m, 0].numpy(), pop.signal[tm:tm + 1])
    np.testing.assert_allclose(obs[m, 0].numpy(), pop.signal[tm - 12:tm].astype(np.float32))


def test_chunked_layout_scores_every_agent_once_per_position_across_group_sizes() -> None:
    """Mixed: 50 + 70 + 18 agents with context sequences of 100, 75 and 1 values share one equal stretch."""
    pop = build_population("mixed", split="test", layout="chunked")
    t = pop.time_step(torch.arange(pop.num_steps)).numpy()
    assert t.shape == (138, pop.num_steps) and len(np.unique(t)) == t.size
    assert t.max() < pop.split_range[1] - pop.horizon + 1 and t.min() >= pop.split_range[0] + 12


def test_bad_actions_and_choices_give_clear_errors() -> None:
    env = gym.make("eq_envs/DataCenter-v0").unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action has shape \(3,\); accepted: \(1,\)"):
        env.step(np.zeros(3, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN or inf"):
        env.step(np.array([np.nan], dtype=np.float32))
    with pytest.raises(ValueError, match="unknown population 'dc-weird'; accepted: dc-similar"):
        build_population("dc-weird")
    with pytest.raises(ValueError, match="unknown region 'XXXX'; accepted: CISO"):
        build_population("phone", region="XXXX")
    with pytest.raises(ValueError, match="agent=99; accepted: 0..49"):
        DownstreamAgentEnv("dc-different-same-lambda", agent=99)
    penv = PopulationParallelEnv("phone", episode_length=2)
    penv.reset(seed=0)
    with pytest.raises(ValueError, match="missing agents"):
        penv.step({penv.possible_agents[0]: np.zeros(12, dtype=np.float32)})


def test_paper_populations_and_wasserstein_ranges() -> None:
    sizes = {"dc": 50, "ev": 70, "phone": 18}
    for name in PAPER_POPULATIONS:
        pop = build_population(name)
        if name != "mixed":
            assert pop.num_agents == sizes[name.split("-")[0]]
    dc_sim = wasserstein_report("dc-similar-same-lambda")["datacenter workload"]
    dc_dif = wasserstein_report("dc-different-same-lambda")["datacenter workload"]
    ev_sim = wasserstein_report("ev-similar")["ev need (kWh)"]
    ev_dif = wasserstein_report("ev-different")["ev need (kWh)"]
    # "different" populations are far more spread than "similar" ones (paper: 0.58 vs 57.97; 9.00 vs 60.36)
    assert dc_dif[1] > 10 * dc_sim[1]
    assert ev_dif[1] > 2 * ev_sim[1]


def test_new_agent_plugs_into_gymnasium_and_pettingzoo() -> None:
    """Extension point: a PuLP-modelled agent defined here runs through both env APIs."""
    base = build_population("ev-similar")
    # Night-capped chargers: the last four slots deliver half power (a MILP, solved by PuLP).
    caps = np.ones((2, 12))
    caps[:, 8:] = 0.5
    milp = SlotMILPAgent([[8.0, 20.0], [3.0]], [[3.3], [7.2]], horizon=12, caps=caps)
    pop = Population("capped-ev", base.signal, "train", base.split_range, [milp], horizon=12)
    env = DownstreamAgentEnv(pop, agent=1, episode_length=3)
    check_env(env, skip_render_check=True)
    penv = PopulationParallelEnv(pop, episode_length=3)
    parallel_api_test(penv, num_cycles=5)
    assert isinstance(milp, AgentGroup)


def test_sb3_ppo_runs_on_datacenter_env() -> None:
    from stable_baselines3 import PPO

    env = gym.make("eq_envs/DataCenter-v0")
    model = PPO("MlpPolicy", env, n_steps=256, batch_size=64, n_epochs=2, seed=0, device="cpu", verbose=0)
    model.learn(total_timesteps=2048)
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(action)
