"""One downstream agent as a Gymnasium environment.

The agent observes what the public model observes (the last 12 signal values),
the action is the public model's prediction of the next ``horizon`` values, and
the reward is minus the regret of the agent's decision at this step.  An
episode is ``episode_length`` consecutive hours of a split, starting at a
position drawn from ``reset(seed=...)``'s generator, at ``options["start"]``, or
at clock position ``options["index"]`` (the agent-env contract of
:mod:`agents.gym_env_group`; the episode then ends early at the split's end).

Registered ids (``import eq_envs`` first, or use ``"eq_envs:eq_envs/..."``)::

    gymnasium.make("eq_envs/DataCenter-v0")     # agent 0 of dc-different-different-lambda
    gymnasium.make("eq_envs/EVCharging-v0")     # agent 0 of ev-similar
    gymnasium.make("eq_envs/PhoneCharging-v0")  # agent 0 of phone
    gymnasium.make("eq_envs/DataCenter-v0", agent=7, split="test", preset="physical")
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from eq_envs.population import DEFAULT_LAYOUT, Population
from eq_envs.presets import build_population


def action_bounds(population: Population) -> tuple[float, float]:
    """Declared action range: the signal's range widened by half its span.

    For populations with data centers the lower bound is 0 (predicted carbon
    must be positive; values under the agent's floor are raised to it and
    reported in ``info["clamped"]``).
    """
    lo, hi = population.signal_bounds
    span = max(hi - lo, 1e-6)
    low = lo - 0.5 * span
    if any(g.kind == "datacenter" for g in population.groups):
        low = max(low, 0.0)
    return low, hi + 0.5 * span


def observation_space(population: Population) -> spaces.Box:
    lo, hi = population.signal_bounds
    return spaces.Box(low=np.float32(lo), high=np.float32(hi), shape=(population.lookback,), dtype=np.float32)


def action_space(population: Population) -> spaces.Box:
    lo, hi = action_bounds(population)
    return spaces.Box(low=np.float32(lo), high=np.float32(hi), shape=(population.horizon,), dtype=np.float32)


def check_action(action: Any, shape: tuple[int, ...], who: str) -> np.ndarray:
    """The action as a float64 array of ``shape``, or a clear error."""
    a = np.asarray(action, dtype=np.float64)
    if a.shape != shape:
        if a.size == int(np.prod(shape)) and a.ndim <= 1:
            a = a.reshape(shape)
        else:
            raise ValueError(f"{who}: action has shape {a.shape}; accepted: {shape} (the predicted signal)")
    if not np.isfinite(a).all():
        raise ValueError(f"{who}: action contains NaN or inf: {a.tolist()}")
    return a


class DownstreamAgentEnv(gym.Env):
    """Agent ``agent`` of a population as a single-agent Gymnasium env.

    Args:
        population: a population name (see :data:`eq_envs.presets.POPULATIONS`)
            or a :class:`~eq_envs.population.Population` (for your own agents).
        agent: index of the agent within the population.
        episode_length: steps per episode (``None``: the whole split from the start).
        split, preset, region, layout: forwarded to :func:`eq_envs.presets.build_population`.
    """

    metadata = {"render_modes": []}

    def __init__(self, population: str | Population = "dc-different-different-lambda", agent: int = 0,
                 episode_length: int | None = 24, split: str = "train", preset: str = "paper",
                 region: str = "CISO", layout: str = DEFAULT_LAYOUT) -> None:
        super().__init__()
        self.population = population if isinstance(population, Population) else \
            build_population(population, split=split, preset=preset, region=region, layout=layout)
        if not 0 <= agent < self.population.num_agents:
            raise ValueError(f"agent={agent}; accepted: 0..{self.population.num_agents - 1} "
                             f"(population {self.population.name} has {self.population.num_agents} agents)")
        steps = self.population.num_steps
        if episode_length is not None and not 1 <= episode_length <= steps:
            raise ValueError(f"episode_length={episode_length}; accepted: 1..{steps} or None")
        self.agent = agent
        self.agent_name = self.population.agent_names[agent]
        self.episode_length = episode_length
        self.observation_space = observation_space(self.population)
        self.action_space = action_space(self.population)
        self._start = 0
        self._step = 0

    def _length(self) -> int:
        return self.episode_length if self.episode_length is not None else self.population.num_steps

    def _obs(self) -> np.ndarray:
        return self.population.agent_observation([self._start + self._step], self.agent)[0].numpy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        last_start = self.population.num_steps - self._length()
        if options and "index" in options:  # the agent-env contract (agents.gym_env_group): set the clock
            index = int(options["index"])
            if not 0 <= index < self.population.num_steps:
                raise ValueError(f"options['index']={index}; accepted: 0..{self.population.num_steps - 1}")
            self._start = index
        elif options and "start" in options:
            start = int(options["start"])
            if not 0 <= start <= last_start:
                raise ValueError(f"options['start']={start}; accepted: 0..{last_start}")
            self._start = start
        else:
            self._start = int(self.np_random.integers(0, last_start + 1)) if self.episode_length is not None else 0
        self._step = 0
        return self._obs(), {"clock": self._start}

    def step(self, action: Any):
        if self._step >= self._length() or self._start + self._step >= self.population.num_steps:
            raise RuntimeError(f"{self.agent_name}: step() called after the episode ended; call reset()")
        a = check_action(action, (self.population.horizon,), self.agent_name)
        clock = self._start + self._step
        ev = self.population.evaluate(torch.from_numpy(a).view(1, 1, -1), [clock])
        m = self.agent
        regret = float(ev.regret[m, 0])
        info = {
            "regret": regret, "cost": float(ev.cost[m, 0]), "oracle_cost": float(ev.oracle_cost[m, 0]),
            "decision": agent_decision(self.population, ev.decisions, m), "clamped": bool(ev.clamped[m, 0]),
            "clock": clock,
        }
        self._step += 1
        truncated = self._step >= self._length() or clock + 1 >= self.population.num_steps
        obs = self._obs() if not truncated else self.population.agent_observation([clock], self.agent)[0].numpy()
        return obs, -regret, False, truncated, info


def agent_decision(population: Population, decisions: list[torch.Tensor], m: int) -> np.ndarray:
    """Agent ``m``'s decision at batch position 0 from the per-group decision tensors."""
    offset = 0
    for g, d in zip(population.groups, decisions):
        if m < offset + g.num_agents:
            return np.asarray(d[m - offset, 0].detach().numpy(), dtype=np.float64)
        offset += g.num_agents
    raise IndexError(m)


def DataCenterEnv(**kwargs: Any) -> DownstreamAgentEnv:
    """A data center (paper Eq. 12); default population ``dc-different-different-lambda``."""
    kwargs.setdefault("population", "dc-different-different-lambda")
    return DownstreamAgentEnv(**kwargs)


def EVChargingEnv(**kwargs: Any) -> DownstreamAgentEnv:
    """An EV (paper Eq. 13); default population ``ev-similar``."""
    kwargs.setdefault("population", "ev-similar")
    return DownstreamAgentEnv(**kwargs)


def PhoneChargingEnv(**kwargs: Any) -> DownstreamAgentEnv:
    """A phone (paper App. A.4); default population ``phone``."""
    kwargs.setdefault("population", "phone")
    return DownstreamAgentEnv(**kwargs)
