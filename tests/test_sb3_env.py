"""The public-model env for SB3: official checkers, reward and info, the equitable wrapper, seeding, PPO."""
from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.wrappers import RescaleAction, RescaleObservation
from hypothesis import given, settings
from hypothesis import strategies as st

import eq_envs
from eq_envs.sb3_env import EquitableRewardWrapper, PolicyPredictor, PublicModelEnv, WindowNormalizeWrapper

LO, HI = np.float32(-1.0), np.float32(1.0)


@pytest.fixture(scope="module")
def shared_env() -> PublicModelEnv:
    return PublicModelEnv("ev-similar", episode_length=8)


@pytest.mark.parametrize("layout", ["shared", "chunked"])
def test_gymnasium_and_sb3_checkers_pass(layout: str) -> None:
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make("eq_envs/PublicModel-v0", layout=layout, episode_length=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SB3 recommends a [-1, 1] action space; a warning, not a failure
        check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped, warn=False)
    pop = env.unwrapped.population
    M, L, H = pop.num_agents, pop.lookback, pop.horizon
    shape_o, shape_a = ((M, L), (M, H)) if layout == "chunked" else ((L,), (H,))
    assert env.observation_space.shape == shape_o and env.action_space.shape == shape_a
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and "clock" in info


def test_registered_apart_from_the_per_agent_ids() -> None:
    assert "eq_envs/PublicModel-v0" in gym.registry and "eq_envs/PublicModel-v0" not in eq_envs.ENV_IDS
    assert gym.make("eq_envs/PublicModel-v0").unwrapped.population.name == "ev-similar"


@pytest.mark.parametrize("layout", ["shared", "chunked"])
def test_reward_is_minus_mean_regret_and_regret_equals_population(layout: str) -> None:
    env = PublicModelEnv("ev-different", episode_length=5, layout=layout)
    pop = env.population
    env.reset(seed=4)
    start = env._start
    rng = np.random.default_rng(1)
    for b in range(5):
        a = rng.uniform(0, 10, env.action_space.shape).astype(np.float32)
        _, reward, term, trunc, info = env.step(a)
        regret = info["agent_regret"]
        assert isinstance(regret, np.ndarray) and regret.shape == (pop.num_agents,) and regret.dtype == np.float64
        assert reward == -np.mean(regret) and (regret >= 0).all()
        want = pop.regret(torch.from_numpy(a.astype(np.float64)).view(-1, 1, pop.horizon), [start + b])[:, 0]
        np.testing.assert_array_equal(regret, want.numpy())
        assert info["clock"] == start + b and not term and trunc == (b == 4)


def test_bad_actions_and_settings_raise_clear_errors(shared_env: PublicModelEnv) -> None:
    shared_env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action has shape \(3,\); accepted: \(12,\)"):
        shared_env.step(np.zeros(3, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN or inf"):
        shared_env.step(np.full(12, np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="episode_length=0"):
        PublicModelEnv("ev-similar", episode_length=0)
    with pytest.raises(ValueError, match="starts='loop'"):
        PublicModelEnv("ev-similar", starts="loop")
    for q in (-1.0, float("nan"), "2", True):
        with pytest.raises(ValueError, match="q="):
            EquitableRewardWrapper(shared_env, q=q)
    for rate in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="rate="):
            EquitableRewardWrapper(shared_env, q=1.0, rate=rate)
    env = PublicModelEnv("phone", episode_length=1)
    env.reset(seed=0)
    env.step(np.ones(12, dtype=np.float32))
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step(np.ones(12, dtype=np.float32))


def _rollout(env: gym.Env, seed: int, steps: int = 20) -> list[float]:
    env.reset(seed=seed)
    env.action_space.seed(seed)
    out = []
    for _ in range(steps):
        _, r, term, trunc, _ = env.step(env.action_space.sample())
        out.append(r)
        if term or trunc:
            env.reset()
    return out


def test_seeding_is_reproducible_and_sequential_starts_tile_the_split() -> None:
    a, b = PublicModelEnv("ev-similar", episode_length=7), PublicModelEnv("ev-similar", episode_length=7)
    assert _rollout(a, 3) == _rollout(b, 3)
    assert _rollout(a, 3) != _rollout(a, 4)
    seq = PublicModelEnv("ev-similar", episode_length=1000, starts="sequential")
    starts = [seq.reset(seed=0 if i == 0 else None)[1]["clock"] for i in range(8)]
    full = seq.population.num_steps // 1000  # full episodes in the split (5189 steps: 5, the last start 4000)
    assert starts == [1000 * (i % full) for i in range(8)]
    assert PublicModelEnv("ev-similar", episode_length=None).reset(seed=1)[1]["clock"] == 0


class _FixedRegrets(gym.Env):
    """Emits given per-agent regret vectors (to test the wrapper alone)."""

    observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)

    def __init__(self, regrets: list[np.ndarray]) -> None:
        self.regrets, self.t = regrets, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        r = np.asarray(self.regrets[self.t], dtype=np.float64)
        self.t += 1
        return np.zeros(1, np.float32), -float(np.mean(r)), False, False, {"agent_regret": r}


def test_wrapper_with_q0_returns_the_base_reward(shared_env: PublicModelEnv) -> None:
    env = EquitableRewardWrapper(PublicModelEnv("ev-similar", episode_length=8), q=0.0)
    env.reset(seed=2)
    shared_env.reset(seed=2)
    for _ in range(8):
        a = shared_env.action_space.sample()
        _, r_base, *_ = shared_env.step(a)
        _, r, _, _, info = env.step(a)
        assert r == r_base == info["base_reward"]
        np.testing.assert_allclose(info["equitable_weights"], 1 / 70)


def test_wrapper_running_means_ema_and_cumulative() -> None:
    regs = [np.array([1.0, 3.0]), np.array([3.0, 1.0]), np.array([2.0, 2.0])]
    ema = EquitableRewardWrapper(_FixedRegrets(regs), q=1.0, rate=0.5)
    cum = EquitableRewardWrapper(_FixedRegrets(regs), q=1.0, rate=None)
    for env in (ema, cum):
        env.reset(seed=0)
    _, r0, _, _, info = ema.step(0)
    assert r0 == -2.0 and list(info["equitable_weights"]) == [0.5, 0.5]  # first step: uniform
    np.testing.assert_allclose(info["running_regret"], [1.0, 3.0])
    _, r1, _, _, info = ema.step(0)
    np.testing.assert_allclose(r1, -(0.25 * 3.0 + 0.75 * 1.0))  # weights 1/4, 3/4 from means (1, 3)
    np.testing.assert_allclose(info["running_regret"], [2.0, 2.0])
    for _ in range(3):
        _, _, _, _, info = cum.step(0)
    np.testing.assert_allclose(info["running_regret"], [2.0, 2.0])
    cum.reset_stats()
    assert cum.running_regret is None


@settings(max_examples=60, deadline=None)
@given(means=st.lists(st.floats(0.01, 50.0), min_size=2, max_size=12), q=st.floats(0.1, 60.0))
def test_wrapper_weights_agents_with_higher_running_regret_more(means: list[float], q: float) -> None:
    c = np.array(means)
    # step 1 sets the running means to c (EMA initialisation); step 2 is scored with weights from them
    env = EquitableRewardWrapper(_FixedRegrets([c, c]), q=q, rate=0.1)
    env.reset(seed=0)
    env.step(0)
    _, r, _, _, info = env.step(0)
    w = info["equitable_weights"]
    assert np.isfinite(w).all() and abs(w.sum() - 1) < 1e-9
    order = np.argsort(c)
    assert (np.diff(w[order]) >= -1e-15).all()  # weight is non-decreasing in the running regret
    hi, lo = int(np.argmax(c)), int(np.argmin(c))
    if c[hi] > c[lo] * (1 + 1e-9):
        assert w[hi] > w[lo]
    # weighting the worse-served agents more never scores better than the plain mean
    assert r <= -c.mean() + 1e-9 * c.max()


def test_sb3_ppo_runs_and_its_policy_evaluates_as_a_public_model() -> None:
    from stable_baselines3 import PPO

    from trainers.evaluation import agent_regrets
    from trainers.metrics import equity_metrics

    base = PublicModelEnv("ev-similar", episode_length=24)
    env = RescaleAction(RescaleObservation(EquitableRewardWrapper(base, q=3.0), LO, HI), LO, HI)
    model = PPO("MlpPolicy", env, n_steps=128, batch_size=64, n_epochs=2, gamma=0.0, seed=0, device="cpu")
    model.learn(total_timesteps=256)
    predictor = PolicyPredictor(model, env)
    obs, _ = base.reset(seed=5)
    got = predictor.mean(torch.from_numpy(obs).unsqueeze(0))[0].numpy()
    # the predictor applies the wrappers' transforms, as the wrapped env does during training
    act, _ = model.predict(env.env.observation(obs), deterministic=True)  # env.env: RescaleObservation
    np.testing.assert_allclose(got, env.action(act), rtol=1e-6)
    # held-out evaluation of the predictor == the env's own per-agent regrets for the same predictions, hour by hour
    # (the same predictions: an EV's choice of slots may flip on a float32 near-tie between batched and single calls)
    test_base = PublicModelEnv("ev-similar", split="test", episode_length=None)
    preds = predictor.mean(test_base.population.observation(torch.arange(test_base.population.num_steps))).numpy()
    test_base.reset(seed=0)
    seen = [test_base.step(p)[4]["agent_regret"] for p in preds]
    regrets, mse = agent_regrets(predictor, test_base.population)
    np.testing.assert_allclose(regrets, np.mean(seen, axis=0), rtol=1e-9, atol=1e-12)
    m = equity_metrics(regrets, test_base.population.agent_names, mse)
    assert m["variance"] == pytest.approx(np.var(np.mean(seen, axis=0)), rel=1e-9)
    assert m["worst"] == pytest.approx(np.max(np.mean(seen, axis=0)), rel=1e-9)


def test_policy_predictor_chunked_layout_shapes() -> None:
    class Const:
        def predict(self, obs, deterministic=True):
            obs = np.asarray(obs)
            return np.broadcast_to(obs[..., :12] * 0 + 3.0, (*obs.shape[:-1], 12)).copy(), None

    env = PublicModelEnv("ev-similar", layout="chunked", episode_length=4)
    pred = PolicyPredictor(Const(), env).mean(env.population.observation(torch.arange(5)))
    assert tuple(pred.shape) == (70, 5, 12) and (pred == 3.0).all()
    with pytest.raises(TypeError, match="PublicModelEnv"):
        PolicyPredictor(Const(), gym.make("eq_envs/EVCharging-v0"))


@pytest.mark.parametrize("layout", ["shared", "chunked"])
def test_window_wrapper_standardises_each_window_and_maps_actions_back(layout: str) -> None:
    env = PublicModelEnv("ev-different", episode_length=4, layout=layout)
    pop = env.population
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(WindowNormalizeWrapper(PublicModelEnv("ev-different", episode_length=4, layout=layout)),
                  skip_render_check=True)
    wrapped = WindowNormalizeWrapper(EquitableRewardWrapper(env, q=0.0))
    z_obs, info = wrapped.reset(seed=3)
    raw = pop.observation([info["clock"]]).numpy()  # [1, L] or [M, 1, L]
    raw = raw[:, 0] if raw.ndim == 3 else raw[0]
    # each window (row) at mean 0 and spread 1, inside the declared bounds
    np.testing.assert_allclose(z_obs.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(z_obs.std(-1), 1.0, rtol=1e-4)
    assert wrapped.observation_space.contains(z_obs)
    # an action of z spreads is the prediction mean + z * spread of each row's own window (numpy oracle)
    rng = np.random.default_rng(0)
    z = rng.uniform(-2, 2, wrapped.action_space.shape).astype(np.float32)
    _, _, _, _, step_info = wrapped.step(z)
    want = raw.mean(-1, keepdims=True) + raw.std(-1, keepdims=True) * z.astype(np.float64)
    regret = pop.regret(torch.from_numpy(want).view(-1, 1, pop.horizon), [info["clock"]])[:, 0].numpy()
    np.testing.assert_allclose(step_info["agent_regret"], regret, rtol=1e-6, atol=1e-9)
    assert step_info["window_clipped"] == 0
    # a window-relative action beyond the signal's range is clipped to the env's bounds
    hi = env.action_space.high.astype(np.float64)
    top = (np.full(raw.shape[:-1] + (1,), hi.max()), np.ones(raw.shape[:-1] + (1,)))
    np.testing.assert_array_equal(wrapped.denormalize(np.ones(wrapped.action_space.shape), top), hi)
    with pytest.raises(ValueError, match="outside the action space"):
        wrapped.step(np.full(wrapped.action_space.shape, 9.0, dtype=np.float32))
    with pytest.raises(ValueError, match="spreads"):
        WindowNormalizeWrapper(env, spreads=0.0)


def test_policy_predictor_undoes_the_window_wrapper() -> None:
    class Zero:  # the deterministic action 0 in [-1, 1]: z = 0, i.e. every hour at its window's mean
        def predict(self, obs, deterministic=True):
            return np.zeros((*np.asarray(obs).shape[:-1], 12), dtype=np.float32), None

    class Half(Zero):  # 0.5 in [-1, 1]: z = spreads / 2 = 4 window spreads above the mean
        def predict(self, obs, deterministic=True):
            return Zero.predict(self, obs)[0] + 0.5, None

    base = PublicModelEnv("ev-similar", episode_length=4)
    env = RescaleAction(RescaleObservation(WindowNormalizeWrapper(base), LO, HI), LO, HI)
    x = base.population.observation(torch.arange(6)).numpy()  # [6, L]
    mean, spread = x.mean(1, keepdims=True), x.std(1, keepdims=True)
    np.testing.assert_allclose(PolicyPredictor(Zero(), env).mean(torch.from_numpy(x)).numpy(),
                               np.repeat(mean, 12, axis=1), rtol=1e-6)
    lo, hi = base.action_space.low[0], base.action_space.high[0]
    np.testing.assert_allclose(PolicyPredictor(Half(), env).mean(torch.from_numpy(x)).numpy(),
                               np.clip(np.repeat(mean + 4 * spread, 12, axis=1), lo, hi), rtol=1e-5)
    with pytest.raises(TypeError, match="WindowNormalizeWrapper must"):
        PolicyPredictor(Zero(), WindowNormalizeWrapper(RescaleAction(base, LO, HI)))


def test_window_wrapper_standardises_as_the_public_models_window_norm() -> None:
    # the SB3 baseline through the wrapper and our window model must see the same inputs, floor included
    # (the two sides hold the floor separately: envs never import training code)
    from trainers.networks import WINDOW_HEAD, build_public_model

    model = build_public_model({"backbone": "mlp", "seq_len": 12, "horizon": 12, "input_norm": "window",
                                "head_kwargs": WINDOW_HEAD})
    seen = []
    model.backbone.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach()))
    base = PublicModelEnv("ev-similar", episode_length=4)
    x = base.population.observation(torch.arange(3)).numpy()
    x = np.concatenate([x, np.full((1, x.shape[1]), 2.5), 2.5 + 1e-4 * np.arange(x.shape[1])[None]])  # flat windows
    model.distribution(torch.from_numpy(x).float())
    ours = WindowNormalizeWrapper.normalize(x, WindowNormalizeWrapper.stats(x))
    np.testing.assert_allclose(seen[0].reshape(len(x), -1).numpy(), ours, rtol=1e-4, atol=1e-4)


def test_trainer_layout_setting_validates_and_trains_on_the_shared_population(tmp_path) -> None:
    import json

    from trainers.config import ConfigError, TrainConfig
    from trainers.training import train

    assert TrainConfig().layout == "shared"  # the paper's layout
    with pytest.raises(ConfigError, match="layout='diagonal' is not accepted; accepted: shared, chunked"):
        TrainConfig(layout="diagonal")
    cfg = TrainConfig(population="ev-similar", layout="shared", objective="mse", epochs=2, max_batches=1,
                      batch_size=16)
    res = train(cfg, tmp_path, stop_after_epoch=1, tensorboard=False)
    assert res.history[0]["batches"] == 1
    # a checkpoint written before the layout and split settings existed was trained chunked on the whole
    # train part (no validation split): it resumes with those settings, and is refused with today's defaults
    old = TrainConfig(population="ev-similar", objective="mse", epochs=2, max_batches=1, batch_size=16,
                      layout="chunked", val_fraction=0.0)
    train(old, tmp_path / "old", stop_after_epoch=1, tensorboard=False)
    ck = torch.load(tmp_path / "old" / "checkpoint.pt", weights_only=True)
    saved = json.loads(ck["config"])
    for key in ("layout", "protocol", "val_fraction", "split_seed"):
        del saved[key]
    ck["config"] = json.dumps(saved)
    torch.save(ck, tmp_path / "old" / "checkpoint.pt")
    new = TrainConfig(population="ev-similar", objective="mse", epochs=2, max_batches=1, batch_size=16)
    with pytest.raises(ConfigError, match="different settings .*layout.*val_fraction"):
        train(new, tmp_path / "old", tensorboard=False)
    assert len(train(old, tmp_path / "old", tensorboard=False).history) == 2
