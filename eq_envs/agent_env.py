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

Argument and action checks (the same in every env of this package:
:class:`DownstreamAgentEnv`, :class:`~eq_envs.population_env.PopulationParallelEnv`
and :class:`~eq_envs.sb3_env.PublicModelEnv`):

* constructor arguments are checked, and a bad one raises ``ValueError``
  (``TypeError`` for a population that is neither a name nor a
  :class:`~eq_envs.population.Population`) naming it and what is accepted:
  ``agent`` and ``episode_length`` must be integers in range (``1.5`` is
  refused, not truncated);
* ``step()`` before the first ``reset()`` raises
  :class:`gymnasium.error.ResetNeeded` (gymnasium's ``OrderEnforcing`` wrapper
  says the same for ``gymnasium.make`` envs; ``.unwrapped`` envs now check it
  themselves);
* actions are **refused, not clipped**, when they lie outside the action
  ``Box`` (beyond float32 rounding of its bounds), have the wrong shape or
  contain NaN/inf: ``ValueError`` naming the bounds.
  A prediction outside the bounds is a bug in the caller, and clipping it
  silently would score a different prediction than the one made.  RL libraries
  clip their own actions to the Box first (Stable-Baselines3 does), so they
  never hit this.
"""
from __future__ import annotations

from numbers import Integral
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.error import ResetNeeded

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


def check_action(action: Any, space: spaces.Box, who: str) -> np.ndarray:
    """The action as a float64 array of the Box's shape, or a ``ValueError`` (see the module doc).

    A flat action with the right number of values is reshaped; anything
    outside ``[space.low, space.high]`` (beyond float32 rounding) is refused,
    not clipped; values within rounding are evaluated as given.
    """
    shape = space.shape
    try:
        a = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: action {action!r} is not an array of numbers; accepted: shape {shape}") from None
    if a.shape != shape:
        if a.size == int(np.prod(shape)) and a.ndim <= 1:
            a = a.reshape(shape)
        else:
            raise ValueError(f"{who}: action has shape {a.shape}; accepted: {shape} (the predicted signal)")
    if not np.isfinite(a).all():
        raise ValueError(f"{who}: action contains NaN or inf: {a.tolist()}")
    # up to float32 rounding of the bounds: RescaleAction and friends compute in float64 and land within it
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    tol = 4 * float(np.finfo(np.float32).eps) * np.maximum(1.0, np.maximum(np.abs(low), np.abs(high)))
    outside = (a < low - tol) | (a > high + tol)
    if outside.any():
        i = np.unravel_index(int(np.argmax(outside)), shape)
        raise ValueError(f"{who}: action value {float(a[i]):g} at {tuple(int(j) for j in i)} is outside the action space; "
                         f"accepted: values in [{float(space.low[i]):g}, {float(space.high[i]):g}] (clip or "
                         f"rescale before step)")
    return a


def check_int(name: str, value: Any, lo: int, hi: int, none_ok: bool = False) -> int | None:
    """``value`` as an int in ``[lo, hi]`` (or None when ``none_ok``), else a ``ValueError`` naming ``name``."""
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral) or not lo <= int(value) <= hi:
        raise ValueError(f"{name}={value!r}; accepted: an integer in {lo}..{hi}" + (" or None" if none_ok else ""))
    return int(value)


def check_population(population: Any, who: str) -> None:
    """``TypeError`` unless ``population`` is a preset name or a :class:`Population`."""
    if not isinstance(population, (str, Population)):
        raise TypeError(f"{who}: population={population!r}; accepted: a population name (eq_envs.presets."
                        f"POPULATIONS) or an eq_envs.population.Population")


def reset_needed(who: str) -> ResetNeeded:
    return ResetNeeded(f"{who}: step() called before reset(); call reset() first")


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
        check_population(population, "DownstreamAgentEnv")
        self.population = population if isinstance(population, Population) else \
            build_population(population, split=split, preset=preset, region=region, layout=layout)
        agent = check_int("agent", agent, 0, self.population.num_agents - 1)
        check_int("episode_length", episode_length, 1, self.population.num_steps, none_ok=True)
        self.agent = agent
        self.agent_name = self.population.agent_names[agent]
        self.episode_length = episode_length
        self.observation_space = observation_space(self.population)
        self.action_space = action_space(self.population)
        self._start: int | None = None  # None until the first reset()
        self._step = 0

    def _length(self) -> int:
        return self.episode_length if self.episode_length is not None else self.population.num_steps

    def _obs(self) -> np.ndarray:
        return self.population.agent_observation([self._start + self._step], self.agent)[0].numpy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        last_start = self.population.num_steps - self._length()
        if options and "index" in options:  # the agent-env contract (agents.gym_env_group): set the clock
            self._start = check_int("options['index']", options["index"], 0, self.population.num_steps - 1)
        elif options and "start" in options:
            self._start = check_int("options['start']", options["start"], 0, last_start)
        else:
            self._start = int(self.np_random.integers(0, last_start + 1)) if self.episode_length is not None else 0
        self._step = 0
        return self._obs(), {"clock": self._start}

    def step(self, action: Any):
        if self._start is None:
            raise reset_needed(self.agent_name)
        if self._step >= self._length() or self._start + self._step >= self.population.num_steps:
            raise RuntimeError(f"{self.agent_name}: step() called after the episode ended; call reset()")
        a = check_action(action, self.action_space, self.agent_name)
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
