"""The public model's problem as a single-agent Gymnasium env, for Stable-Baselines3 and other RL libraries.

:class:`PublicModelEnv` lets an off-the-shelf RL algorithm *be* the public
model: an observation is what the public model sees and an action is what it
predicts, for **all** agents of a population at once.

* ``layout="shared"`` (default, the paper's, see :mod:`eq_envs.population`):
  every agent is at the same clock hour, so an observation is the one public
  input window ``[L]`` (the last ``L = 12`` signal values) and an action the one
  prediction ``[H]`` that every agent decides on -- exactly the public model's
  signature ``x [L] -> y_hat [H]``.
* ``layout="chunked"`` (a variant, see :mod:`eq_envs.population`): each
  agent owns its own stretch of time, so an observation is ``[M, L]`` (row ``m``:
  agent ``m``'s input) and an action ``[M, H]`` (row ``m``: the prediction agent
  ``m`` decides on).  A policy that applies one network row by row is the public
  model; an MLP policy over the flattened ``[M·L]`` input is a more general map.

Each ``step`` is one clock position of the split.  Reward = **minus the mean
regret over all agents** (the utilitarian objective, ``q = 0``; raw regrets, the
mixed population's group weights are not applied); ``info["agent_regret"]`` is
the per-agent regret vector (float64 ``[M]``), equal to
:meth:`eq_envs.population.Population.regret` for the same prediction and clock.
An episode is ``episode_length`` consecutive clock positions starting at a
position drawn from the seeded ``np_random`` (``starts="random"``), or tiling the
split in order (``starts="sequential"``: 0, ``T``, ``2T``, ... wrapping to 0;
``reset(seed=...)`` restarts at 0).  Actions never change later observations
(the problem is a contextual bandit), so ``gamma = 0`` is the natural discount
for an RL learner.

Spaces (float32 ``Box``; the same bounds as the per-agent envs of
:mod:`eq_envs.agent_env`):

* observation: ``[signal min, signal max]`` of the whole series, shape ``(L,)``
  or ``(M, L)``;
* action: ``[min - span/2, max + span/2]`` (``span = max - min``; lower bound 0
  when the population has data centers), shape ``(H,)`` or ``(M, H)``.  Actions
  outside the bounds are refused, not clipped, as in every env of this package
  (:mod:`eq_envs.agent_env`; an RL library clips its actions first, SB3 does);
  they, NaN/inf or a wrong shape raise ``ValueError``, and ``step()`` before
  ``reset()`` raises :class:`gymnasium.error.ResetNeeded`.  SB3 recommends a
  ``[-1, 1]`` action space: wrap with ``gymnasium.wrappers.RescaleAction`` (and
  ``RescaleObservation``), as ``trainers/baselines/sb3.py`` does.

:class:`EquitableRewardWrapper` replaces the reward with the equitable
weighting of the per-agent regrets, :class:`WindowNormalizeWrapper` gives an RL
policy the public model's window normalisation, and :class:`PolicyPredictor` turns a trained
SB3 policy into a public model for :func:`trainers.evaluation.agent_regrets`.
See ``docs/sb3.md``.  Registered as ``eq_envs/PublicModel-v0``.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from eq_envs.agent_env import action_bounds, check_action, check_int, check_population, reset_needed
from eq_envs.population import Population
from eq_envs.presets import build_population

STARTS = ("random", "sequential")


class PublicModelEnv(gym.Env):
    """All agents of a population served by one action per step (see module doc).

    Args:
        population: population name (see :data:`eq_envs.presets.POPULATIONS`,
            default ``"ev-similar"``) or a :class:`~eq_envs.population.Population`.
        episode_length: clock positions per episode (``None``: the whole split from 0).
        starts: ``"random"`` (start drawn from the seeded RNG) or ``"sequential"``.
        split, preset, region, gamma, eta, layout: forwarded to
            :func:`eq_envs.presets.build_population` (``layout`` default ``"shared"``).
    """

    metadata = {"render_modes": []}

    def __init__(self, population: str | Population = "ev-similar", episode_length: int | None = 24,
                 starts: str = "random", split: str = "train", preset: str = "paper", region: str = "CISO",
                 gamma: float = 1.0, eta: float = 1.0, layout: str = "shared") -> None:
        super().__init__()
        check_population(population, "PublicModelEnv")
        self.population = population if isinstance(population, Population) else \
            build_population(population, split=split, preset=preset, region=region, gamma=gamma, eta=eta,
                             layout=layout)
        pop = self.population
        check_int("episode_length", episode_length, 1, pop.num_steps, none_ok=True)
        if starts not in STARTS:
            raise ValueError(f"starts={starts!r}; accepted: {', '.join(STARTS)}")
        self.episode_length = episode_length
        self.starts = starts
        M, L, H = pop.num_agents, pop.lookback, pop.horizon
        self.obs_shape = (M, L) if pop.per_agent_inputs else (L,)
        self.action_shape = (M, H) if pop.per_agent_inputs else (H,)
        lo, hi = pop.signal_bounds
        self.observation_space = spaces.Box(low=np.float32(lo), high=np.float32(hi), shape=self.obs_shape,
                                            dtype=np.float32)
        alo, ahi = action_bounds(pop)
        self.action_space = spaces.Box(low=np.float32(alo), high=np.float32(ahi), shape=self.action_shape,
                                       dtype=np.float32)
        self._start: int | None = None  # None until the first reset()
        self._step = 0
        self._next_start = 0  # sequential mode

    @property
    def num_agents(self) -> int:
        return self.population.num_agents

    def _length(self) -> int:
        return self.episode_length if self.episode_length is not None else self.population.num_steps

    def _obs(self, clock: int) -> np.ndarray:
        obs = self.population.observation([clock])  # [1, L] or [M, 1, L]
        return (obs[:, 0] if obs.dim() == 3 else obs[0]).numpy().copy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        length = self._length()
        last_start = self.population.num_steps - length
        if options and "start" in options:
            start = check_int("options['start']", options["start"], 0, last_start)
        elif self.episode_length is None:
            start = 0
        elif self.starts == "random":
            start = int(self.np_random.integers(0, last_start + 1))
        else:
            if seed is not None or self._next_start > last_start:
                self._next_start = 0
            start = self._next_start
            self._next_start = start + length
        self._start, self._step = start, 0
        return self._obs(start), {"clock": start}

    def step(self, action: Any):
        if self._start is None:
            raise reset_needed("PublicModelEnv")
        if self._step >= self._length():
            raise RuntimeError("PublicModelEnv: step() called after the episode ended; call reset()")
        a = check_action(action, self.action_space, "PublicModelEnv")
        clock = self._start + self._step
        pred = torch.from_numpy(a).view(-1, 1, self.population.horizon)  # [1|M, 1, H]
        ev = self.population.evaluate(pred, [clock])
        regret = ev.regret[:, 0].numpy().astype(np.float64, copy=True)
        reward = -float(np.mean(regret))
        info = {"agent_regret": regret, "agent_cost": ev.cost[:, 0].numpy().astype(np.float64, copy=True),
                "agent_oracle_cost": ev.oracle_cost[:, 0].numpy().astype(np.float64, copy=True),
                "clamped": int(ev.clamped[:, 0].sum()), "clock": clock}
        self._step += 1
        truncated = self._step >= self._length()
        obs = self._obs(clock if truncated else clock + 1)
        return obs, reward, False, truncated, info


def check_q(q: float) -> float:
    """``q`` as a float after checking it is a finite real ``>= 0`` (the exponent is ``q + 1``)."""
    if isinstance(q, bool) or not isinstance(q, Real) or not math.isfinite(float(q)) or float(q) < 0:
        raise ValueError(f"q={q!r}; accepted: a finite real >= 0 (the equitable exponent is q+1)")
    return float(q)


class EquitableRewardWrapper(gym.Wrapper):
    r"""Reward = minus the equitable weighting of the per-agent regrets.

    The Equitable Objective is ``F = sum_m Cbar_m^(q+1)`` over per-agent mean
    regrets; its gradient is ``sum_m (q+1) Cbar_m^q grad Cbar_m``: agent ``m``'s
    regret counts with weight ``(q+1) Cbar_m^q``.  This wrapper keeps running
    per-agent mean regrets ``Cbar`` from ``info["agent_regret"]`` and rewards

        r_t = - sum_m w_m C_{m,t},   w_m = Cbar_m^q / sum_k Cbar_k^q

    (the ``(q+1)`` factor cancels in the normalisation), so the weights sum to 1,
    the reward stays on the regret scale and ``q = 0`` gives back the base reward
    (minus the mean regret) exactly.  Weights are computed in log space (no
    overflow for large ``q``); agents with ``Cbar_m = 0`` get weight 0 for
    ``q > 0``, and all-zero means give uniform weights.

    Running means: ``rate`` is the exponential-moving-average rate
    (``Cbar <- (1 - rate) Cbar + rate C_t``, initialised with the first step's
    regrets; default 0.01, a memory of about 100 steps), or ``None`` for the
    cumulative mean over every step seen.  Step ``t`` is weighted with the means
    *before* it (uniform weights on the very first step), then the means are
    updated.  The means persist across episodes (they track how the learner
    serves each agent); :meth:`reset_stats` clears them.

    ``info`` gains ``base_reward`` (the wrapped env's reward),
    ``equitable_weights`` (``w``, ``[M]``) and ``running_regret`` (``Cbar`` after the
    update, ``[M]``).
    """

    def __init__(self, env: gym.Env, q: float, rate: float | None = 0.01) -> None:
        super().__init__(env)
        self.q = check_q(q)
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, Real) or not 0 < float(rate) <= 1):
            raise ValueError(f"rate={rate!r}; accepted: a number in (0, 1] (EMA rate) or None (cumulative mean)")
        self.rate = None if rate is None else float(rate)
        self.running_regret: np.ndarray | None = None
        self.count = 0

    def reset_stats(self) -> None:
        """Forget the running per-agent means."""
        self.running_regret, self.count = None, 0

    def weights(self, num_agents: int) -> np.ndarray:
        """Current per-agent weights ``w`` (sum 1) from the running means."""
        if self.running_regret is None or self.q == 0.0:
            return np.full(num_agents, 1.0 / num_agents)
        c = self.running_regret
        with np.errstate(divide="ignore"):
            z = self.q * np.where(c > 0, np.log(np.maximum(c, np.finfo(np.float64).tiny)), -np.inf)
        top = z.max()
        if not np.isfinite(top):
            return np.full(num_agents, 1.0 / num_agents)
        e = np.exp(z - top)
        return e / e.sum()

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if "agent_regret" not in info:
            raise KeyError("EquitableRewardWrapper: the wrapped env's info has no 'agent_regret' "
                           "(wrap a PublicModelEnv)")
        regret = np.asarray(info["agent_regret"], dtype=np.float64)
        w = self.weights(regret.size)
        new_reward = float(reward) if self.q == 0.0 else -float(np.dot(w, regret))
        self.count += 1
        if self.running_regret is None:
            self.running_regret = regret.copy()
        elif self.rate is None:
            self.running_regret += (regret - self.running_regret) / self.count
        else:
            self.running_regret = (1.0 - self.rate) * self.running_regret + self.rate * regret
        info = dict(info, base_reward=float(reward), equitable_weights=w, running_regret=self.running_regret.copy())
        return obs, new_reward, terminated, truncated, info


#: Smallest spread a window is divided by (the signals are scaled to about 0--10; the same floor as the public
#: model's ``input_norm="window"``, ``trainers.networks.WINDOW_NORM_EPS``, held apart because envs never import
#: training code; tests/test_sb3_env.py checks that both standardise a window alike).
WINDOW_EPS = 1e-2
#: Default half-width of :class:`WindowNormalizeWrapper`'s action space, in window spreads: it holds 99 % of the
#: next 12 hours' deviations from the last 12 hours' mean on the CISO and ERCOT training months (measured:
#: 99th percentile 6.9 and 8.1 spreads, 90th 3.5 and 3.9).
WINDOW_ACTION_SPREADS = 8.0


class WindowNormalizeWrapper(gym.Wrapper):
    r"""The public model's window normalisation (RevIN, Kim et al. 2022) as an env wrapper, for RL libraries.

    Each observation window ``x`` (a row of ``L`` public inputs) is replaced by its standardised values
    ``(x - m) / s`` with ``m`` its mean and ``s = max(std(x), WINDOW_EPS)`` its spread (population std); an
    action ``z`` is read in the same units and the wrapped env receives ``m + s z`` -- what a public model with
    ``input_norm="window"`` (:mod:`trainers.networks`) does around its backbone.  A policy trained through it
    sees every window at the same level and scale, whatever the season, as ours does.

    Spaces: observation ``[-sqrt(L-1), sqrt(L-1)]`` (the bound of a standardised window), action
    ``[-spreads, spreads]`` (default :data:`WINDOW_ACTION_SPREADS`); shapes as the wrapped env's.  ``m + s z`` is
    clipped to the wrapped env's action bounds (they are ``span/2`` beyond the series' range, so only a
    window-relative action far outside every value the signal takes is clipped; ``info["window_clipped"]``
    counts the entries).  Wrap a :class:`PublicModelEnv` (possibly inside :class:`EquitableRewardWrapper`)
    before any rescaling: :class:`PolicyPredictor` applies it first to inputs and last to actions.
    """

    def __init__(self, env: gym.Env, spreads: float = WINDOW_ACTION_SPREADS) -> None:
        super().__init__(env)
        if isinstance(spreads, bool) or not isinstance(spreads, Real) or not 0 < float(spreads) < math.inf:
            raise ValueError(f"spreads={spreads!r}; accepted: a finite number > 0 (the action's half-width in "
                             f"window spreads)")
        inner_obs, inner_act = env.observation_space, env.action_space
        if not isinstance(inner_obs, spaces.Box) or not isinstance(inner_act, spaces.Box):
            raise TypeError("WindowNormalizeWrapper: wrap an env with Box observations and actions (a PublicModelEnv)")
        L = inner_obs.shape[-1]
        bound = np.float32(math.sqrt(max(L - 1, 1)))
        self.observation_space = spaces.Box(-bound, bound, shape=inner_obs.shape, dtype=np.float32)
        self.action_space = spaces.Box(np.float32(-spreads), np.float32(spreads), shape=inner_act.shape,
                                       dtype=np.float32)
        self.spreads = float(spreads)
        self._stats: tuple[np.ndarray, np.ndarray] | None = None

    @staticmethod
    def stats(obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and spread of every window (the last axis) of ``obs``, with a kept last axis."""
        x = np.asarray(obs, dtype=np.float64)
        return x.mean(axis=-1, keepdims=True), np.maximum(x.std(axis=-1, keepdims=True), WINDOW_EPS)

    @staticmethod
    def normalize(obs: np.ndarray, stats: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        m, s = stats
        return ((np.asarray(obs, dtype=np.float64) - m) / s).astype(np.float32)

    def denormalize(self, action: np.ndarray, stats: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """``m + s z`` in the wrapped env's units, clipped to its action bounds."""
        m, s = stats
        a = m + s * np.asarray(action, dtype=np.float64)
        box = self.env.action_space
        return np.clip(a, box.low.astype(np.float64), box.high.astype(np.float64))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._stats = self.stats(obs)
        return self.normalize(obs, self._stats), info

    def step(self, action: Any):
        if self._stats is None:
            raise reset_needed("WindowNormalizeWrapper")
        z = check_action(action, self.action_space, "WindowNormalizeWrapper")
        a = self.denormalize(z, self._stats)
        m, s = self._stats
        clipped = int(np.count_nonzero(a != m + s * z))
        obs, reward, terminated, truncated, info = self.env.step(a.astype(np.float32))
        info = dict(info, window_clipped=clipped)
        self._stats = self.stats(obs)
        return self.normalize(obs, self._stats), reward, terminated, truncated, info


class PolicyPredictor:
    """A deterministic RL policy as a public model for :mod:`trainers.evaluation`.

    ``policy`` is anything with ``predict(obs, deterministic=True) -> (action, state)``
    (an SB3 model).  ``env`` is the env it was trained on: observation and
    action wrappers on it (``RescaleObservation``, ``RescaleAction``, ... --
    elementwise transforms -- and a :class:`WindowNormalizeWrapper` innermost) are applied to the raw public
    inputs and to the policy's actions, so the predictor maps raw inputs ``x`` to predictions in
    signal units, as :class:`trainers.networks.PublicModel.mean` does:
    ``[B, L] -> [B, H]`` (shared layout) or ``[M, B, L] -> [M, B, H]`` (chunked).
    """

    def __init__(self, policy: Any, env: gym.Env | Any) -> None:
        self.policy = policy
        chain = []
        e = env
        while isinstance(e, gym.Wrapper):
            chain.append(e)
            e = e.env
        if not isinstance(e, PublicModelEnv):
            raise TypeError(f"PolicyPredictor: env must be (a wrapped) PublicModelEnv, got {type(e).__name__}")
        self.base = e
        self._obs_wrappers = [w for w in reversed(chain) if isinstance(w, gym.ObservationWrapper)]  # inner first
        self._act_wrappers = [w for w in chain if isinstance(w, gym.ActionWrapper)]  # outer first
        windows = [i for i, w in enumerate(chain) if isinstance(w, WindowNormalizeWrapper)]
        self._window: WindowNormalizeWrapper | None = chain[windows[0]] if windows else None
        if len(windows) > 1 or (windows and any(isinstance(w, (gym.ObservationWrapper, gym.ActionWrapper))
                                                for w in chain[windows[0] + 1:])):
            raise TypeError("PolicyPredictor: a WindowNormalizeWrapper must be the only one and wrap the "
                            "PublicModelEnv before any observation or action wrapper")

    def eval(self) -> PolicyPredictor:
        return self

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        per_agent = self.base.population.per_agent_inputs
        obs = x.detach().cpu().numpy().astype(np.float32)
        if per_agent:  # [M, B, L] -> [B, M, L]
            obs = obs.transpose(1, 0, 2)
        stats = None
        if self._window is not None:  # innermost: first on the inputs, last on the actions
            stats = self._window.stats(obs)
            obs = self._window.normalize(obs, stats)
        for w in self._obs_wrappers:
            obs = w.observation(obs)
        act, _ = self.policy.predict(np.asarray(obs, dtype=np.float32), deterministic=True)
        act = np.asarray(act, dtype=np.float64)
        for w in self._act_wrappers:
            act = w.action(act)
        act = np.asarray(act, dtype=np.float64)
        if self._window is not None:
            act = self._window.denormalize(act, stats)
        if per_agent:  # [B, M, H] -> [M, B, H]
            act = act.transpose(1, 0, 2)
        return torch.from_numpy(np.ascontiguousarray(act))

    __call__ = mean
