"""A population of downstream agents as a PettingZoo ``ParallelEnv``.

All ``M`` agents share one clock: at every step each observes the same public
input (the last 12 signal values) and acts with a prediction -- in the intended
use the same parameter-shared public model produces every agent's action,
sampled independently per agent.  Each agent's reward is minus the regret of
its own decision.  One ``step`` evaluates all agents in one batched call
(:meth:`eq_envs.population.Population.evaluate`).

Arguments and actions are checked as in every env of this package (see
:mod:`eq_envs.agent_env`): ``actions`` must be a dict with one in-bounds
action per live agent -- out-of-bounds actions are refused, not clipped -- and
``step()`` before ``reset()`` raises :class:`gymnasium.error.ResetNeeded`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.utils import seeding
from pettingzoo import ParallelEnv

from eq_envs.agent_env import (
    action_space,
    agent_decision,
    check_action,
    check_int,
    check_population,
    observation_space,
    reset_needed,
)
from eq_envs.population import DEFAULT_LAYOUT, Population
from eq_envs.presets import build_population


class PopulationParallelEnv(ParallelEnv):
    """PettingZoo parallel env over a :class:`~eq_envs.population.Population`.

    Args:
        population: population name (see :data:`eq_envs.presets.POPULATIONS`) or object.
        episode_length: steps per episode (``None``: the whole split).
        split, preset, region, layout: forwarded to :func:`eq_envs.presets.build_population`.
    """

    metadata = {"name": "eq_population_v0", "render_modes": [], "is_parallelizable": True}

    def __init__(self, population: str | Population = "dc-different-different-lambda",
                 episode_length: int | None = 24, split: str = "train", preset: str = "paper",
                 region: str = "CISO", layout: str = DEFAULT_LAYOUT, render_mode: str | None = None) -> None:
        check_population(population, "PopulationParallelEnv")
        self.population = population if isinstance(population, Population) else \
            build_population(population, split=split, preset=preset, region=region, layout=layout)
        check_int("episode_length", episode_length, 1, self.population.num_steps, none_ok=True)
        self.episode_length = episode_length
        self.render_mode = render_mode
        self.possible_agents = list(self.population.agent_names)
        self.agents: list[str] = []
        self._obs_space = observation_space(self.population)
        self._act_space = action_space(self.population)
        self._rng, _ = seeding.np_random(None)
        self._start: int | None = None  # None until the first reset()
        self._step = 0

    def observation_space(self, agent: str) -> spaces.Box:
        return self._obs_space

    def action_space(self, agent: str) -> spaces.Box:
        return self._act_space

    def _length(self) -> int:
        return self.episode_length if self.episode_length is not None else self.population.num_steps

    def _observations(self, clock: int) -> dict[str, np.ndarray]:
        obs = self.population.observation([clock])
        if obs.dim() == 2:  # shared layout: one public input for everybody
            return {a: obs[0].numpy().copy() for a in self.agents}
        names = self.possible_agents
        return {a: obs[names.index(a), 0].numpy().copy() for a in self.agents}

    def reset(self, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self._rng, _ = seeding.np_random(seed)
        last_start = self.population.num_steps - self._length()
        self._start = int(self._rng.integers(0, last_start + 1)) if self.episode_length is not None else 0
        self._step = 0
        self.agents = list(self.possible_agents)
        return self._observations(self._start), {a: {"clock": self._start} for a in self.agents}

    def step(self, actions: dict[str, Any]):
        if self._start is None:
            raise reset_needed("PopulationParallelEnv")
        if not self.agents:
            raise RuntimeError("step() called after the episode ended; call reset()")
        if not isinstance(actions, Mapping):
            raise TypeError(f"actions is a {type(actions).__name__}; accepted: a dict {{agent name: action}} "
                            f"with one action per live agent")
        missing = [a for a in self.agents if a not in actions]
        unknown = [a for a in actions if a not in self.possible_agents]
        if missing or unknown:
            raise ValueError(f"actions: missing agents {missing[:5]}, unknown agents {unknown[:5]}; "
                             f"accepted: one action per live agent")
        pred = np.stack([check_action(actions[a], self._act_space, a) for a in self.possible_agents])
        clock = self._start + self._step
        ev = self.population.evaluate(torch.from_numpy(pred).unsqueeze(1), [clock])
        regret = ev.regret[:, 0].tolist()
        rewards = {a: -regret[m] for m, a in enumerate(self.possible_agents)}
        infos = {a: {"regret": regret[m], "cost": float(ev.cost[m, 0]), "oracle_cost": float(ev.oracle_cost[m, 0]),
                     "clamped": bool(ev.clamped[m, 0]), "clock": clock,
                     "decision": agent_decision(self.population, ev.decisions, m)}
                 for m, a in enumerate(self.possible_agents)}
        self._step += 1
        done = self._step >= self._length()
        obs = self._observations(clock if done else clock + 1)
        terminations = {a: False for a in self.agents}
        truncations = {a: done for a in self.agents}
        if done:
            self.agents = []
        return obs, rewards, terminations, truncations, infos

    def render(self) -> None:
        return None

    def close(self) -> None:
        return None


def parallel_env(**kwargs: Any) -> PopulationParallelEnv:
    """PettingZoo-style constructor: ``eq_envs.population_env.parallel_env(population="ev-similar")``."""
    return PopulationParallelEnv(**kwargs)
