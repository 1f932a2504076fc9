"""Stable-Baselines3 PPO, A2C and SAC playing the public model on :class:`eq_envs.sb3_env.PublicModelEnv`.

The env is the public model's single-agent view of the setting's training
split (shared layout: observation = the public input ``[L]``, action = the
prediction ``[H]``; chunked: ``[M, L]`` and ``[M, H]``), with 24-step
episodes from random starts.  Reward: minus the mean regret over the agents
(``util``), or the equitable weighting of the per-agent regrets at the
setting's ``q`` (``equitable``: :class:`eq_envs.sb3_env.EquitableRewardWrapper`,
running means with EMA rate 0.01).  SB3's ``MlpPolicy`` with library defaults
except ``gamma = 0`` (a contextual bandit: an action never changes later
observations), observations and actions rescaled to ``[-1, 1]`` (SB3's
recommendation), and SAC's replay buffer sized to the run.  The ``(window)``
variants put :class:`eq_envs.sb3_env.WindowNormalizeWrapper` under the rescaling:
the like-for-like baseline of a public model with ``input_norm="window"``.

Budget: one env step is one clock position and ``M`` agent-decisions.  PPO
and A2C learn in whole rollouts of ``n_steps``; a run takes the whole
rollouts that fit in the budget (SAC: the steps).  Gradient steps are counted
on the policy's optimizer (PPO, A2C) or the actor's (SAC) with an optimizer
hook.  Checkpoints are evaluated through :class:`eq_envs.sb3_env.PolicyPredictor`
(the deterministic action in signal units), the same per-step protocol as our
models.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from eq_envs.population import Population
from eq_envs.sb3_env import EquitableRewardWrapper, PolicyPredictor, PublicModelEnv, WindowNormalizeWrapper
from trainers.baselines.base import Counts, Method, MethodRun, Predictor, SettingView, lr_batch_grid

LO, HI = np.float32(-1.0), np.float32(1.0)  # SB3's preferred spaces (float32: no precision warning)
EPISODE_LENGTH = 24
EQUITABLE_RATE = 0.01
#: algorithm -> (SB3's default learning rate, the grid's batch-like setting, its full-grid sizes (smaller, SB3's
#: default), its --quick size).  PPO/A2C: the rollout length n_steps; SAC: the replay minibatch size.
ALGORITHMS: dict[str, tuple[float, str, tuple[int, ...], tuple[int, ...]]] = {
    "PPO": (3e-4, "n_steps", (256, 2048), (64,)),
    "A2C": (7e-4, "n_steps", (5, 32), (5,)),
    "SAC": (3e-4, "batch_size", (64, 256), (64,)),
}


def make_env(setting: SettingView, equitable: bool, seed: int, window: bool = False):
    """The rescaled (and, with ``equitable``, re-weighted; with ``window``, window-normalised) training env of
    ``setting``, seeded."""
    from gymnasium.wrappers import RescaleAction, RescaleObservation

    pop = setting.split_population("train")
    env = PublicModelEnv(pop, episode_length=min(EPISODE_LENGTH, pop.num_steps))
    if equitable:
        env = EquitableRewardWrapper(env, q=setting.q, rate=EQUITABLE_RATE)
    if window:
        env = WindowNormalizeWrapper(env)
    env = RescaleAction(RescaleObservation(env, LO, HI), LO, HI)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env


class SB3Method(Method):
    """``algo`` (``"PPO"``, ``"A2C"`` or ``"SAC"``) on the utilitarian or the equitable reward; with ``window``,
    through :class:`~eq_envs.sb3_env.WindowNormalizeWrapper` (the policy sees each window standardised and acts
    in its units, as a public model with ``input_norm="window"``), named ``"<algo> <reward> (window)"``."""

    def __init__(self, algo: str, equitable: bool, window: bool = False) -> None:
        reward = "equitable" if equitable else "util"
        what = "the equitable reward (running per-agent weights)" if equitable else "minus the mean regret"
        norm = " (window)" if window else ""
        super().__init__(f"{algo} {reward}{norm}", "sb3", f"Stable-Baselines3 {algo} (MlpPolicy) on {what}"
                         + (", each window standardised and the action mapped back" if window else ""))
        self.algo, self.equitable, self.window = algo, equitable, window

    def _class(self):
        import stable_baselines3

        return getattr(stable_baselines3, self.algo)

    def decisions_per_position(self, pop: Population) -> int:
        return pop.num_agents

    def decisions_per_unit(self, pop: Population, hp: dict[str, Any]) -> int:
        """One env step (SAC) or one rollout of ``n_steps`` (PPO, A2C)."""
        return pop.num_agents * (1 if self.algo == "SAC" else int(hp["n_steps"]))

    def grid(self, setting: SettingView, quick: bool) -> list[dict[str, Any]]:
        lr, key, sizes, quick_sizes = ALGORITHMS[self.algo]
        return lr_batch_grid(lr, key, sizes, quick_sizes, quick)

    def run(self, run: MethodRun) -> None:
        pop = run.setting.split_population("train")
        M = pop.num_agents
        env = make_env(run.setting, self.equitable, run.seed, self.window)
        kw: dict[str, Any] = {"learning_rate": float(run.hp["lr"])}
        if self.algo == "SAC":
            kw["batch_size"] = int(run.hp["batch_size"])
            kw["buffer_size"] = max(run.targets[-1] // M, 1) + 1  # the whole run fits; the default 1e6 would not
            unit = 1
        else:
            kw["n_steps"] = unit = int(run.hp["n_steps"])
        model = self._class()("MlpPolicy", env, gamma=0.0, seed=run.seed, device="cpu", verbose=0, **kw)
        optimizer = model.actor.optimizer if self.algo == "SAC" else model.policy.optimizer
        grad_steps = 0

        def count_step(*_: Any) -> None:
            nonlocal grad_steps
            grad_steps += 1

        optimizer.register_step_post_hook(count_step)
        predictor = PolicyPredictor(model, env)

        def save(path: Path) -> Path:
            out = path.with_suffix(".zip")
            model.save(out)
            return out

        units = run.unit_targets(self.decisions_per_unit(pop, run.hp))
        run.checkpoint(Counts(0, 0, 0, 0.0), predictor, save)
        wall = 0.0
        for u in units:
            t0 = time.perf_counter()
            model.learn(total_timesteps=u * unit - model.num_timesteps, reset_num_timesteps=False)
            wall += time.perf_counter() - t0
            n = int(model.num_timesteps)
            run.checkpoint(Counts(n, n * M, grad_steps, wall), predictor, save)

    def load_predictor(self, path: Path, setting: SettingView) -> Predictor:
        return PolicyPredictor(self._class().load(path, device="cpu"),
                               make_env(setting, self.equitable, 0, self.window))
