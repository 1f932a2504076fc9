"""Any Gymnasium env that follows the agent contract, as an agent group of the trainer.

Someone who already wrote a downstream agent as a Gymnasium env trains the
public model for it without a rewrite.  **The contract** (one env = one agent):

* ``action_space`` is a ``Box`` of shape ``(horizon,)``: the action *is* the
  public model's prediction of the next ``horizon`` signal values;
* ``reset(options={"index": i})`` puts the env's clock at position ``i`` of
  the population's clock (``0 <= i < num_steps``; the env maps it to its own
  time, so it should score the same hours the population's signal shows the
  public model -- simplest with ``layout = "shared"`` and the same signal);
* ``step(prediction)`` makes the agent's decision on it and returns
  ``reward = -regret`` with ``info["regret"]`` (>= 0); ``info["cost"]``,
  ``info["oracle_cost"]`` and ``info["decision"]`` are used when present.

:class:`agents.base.AgentGroup` -> :class:`GymEnvAgentGroup`: ``M`` envs are
stepped together through Gymnasium's vector API -- ``SyncVectorEnv`` in this
process, or ``AsyncVectorEnv`` with one worker process per env (several cores;
worth it when a step is expensive, e.g. solves an optimisation).  A batch of
``B`` clock positions costs ``B`` vector resets and steps.  The regret is the
env's own; ``reward == -info["regret"]`` is checked on every step.
``eq_envs.agent_env.DownstreamAgentEnv`` follows the contract (tested against
the batched fast path); BENCHMARKS.md has the throughput.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AsyncVectorEnv, SyncVectorEnv
from torch import Tensor

from agents.base import AgentGroup, Context, Evaluation

VECTORIZATION = ("sync", "async")


class ContractError(RuntimeError):
    """An env broke the agent contract (wrong space, missing ``info["regret"]``, reward != -regret)."""


class GymEnvAgentGroup(AgentGroup):
    """``M`` Gymnasium envs (one agent each) following the contract in the module docstring.

    Args:
        env_fns: one callable per agent returning its env (as ``gymnasium.vector`` takes them).
        horizon: predicted steps (the envs' action shape).
        names: agent names (default ``<kind>_<m>``).
        vectorization: ``"sync"`` (this process) or ``"async"`` (one process per env).
        kind: a label for the group (default ``"gym_env"``).
    """

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]], horizon: int, names: list[str] | None = None,
                 vectorization: str = "sync", kind: str = "gym_env") -> None:
        if vectorization not in VECTORIZATION:
            raise ValueError(f"vectorization={vectorization!r}; accepted: {VECTORIZATION}")
        self.kind = kind
        super().__init__(len(env_fns), horizon, names)
        self.envs: SyncVectorEnv | AsyncVectorEnv | None = SyncVectorEnv(list(env_fns)) \
            if vectorization == "sync" else AsyncVectorEnv(list(env_fns), context="fork")
        space = self.envs.single_action_space
        if not isinstance(space, gym.spaces.Box) or space.shape != (horizon,):
            self.close()
            raise ContractError(f"{kind}: action space {space}; accepted: Box of shape ({horizon},) "
                                "(the action is the predicted signal)")
        self._dtype = space.dtype

    def context(self, index: Tensor) -> dict[str, Tensor]:
        return {"index": torch.as_tensor(index, dtype=torch.long).unsqueeze(0).expand(self.num_agents, -1)}

    def decide(self, pred: Tensor, ctx: Context) -> Tensor:
        return pred.detach().expand(self.num_agents, -1, -1)  # the envs decide inside step()

    def cost(self, decision: Tensor, truth: Tensor, ctx: Context) -> Tensor:
        raise NotImplementedError("a Gymnasium env scores its own decisions: use evaluate()")

    def evaluate(self, pred: Tensor, truth: Tensor, index: Tensor, ctx: Context | None = None, *,
                 memory_budget: int | None = None) -> Evaluation:
        """Reset every env at each clock position, step it with its prediction, read ``info``.

        ``memory_budget`` is accepted for the common signature and not needed:
        the envs are stepped one clock position at a time.
        """
        pred = self.check_pred(pred)
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        if self.envs is None:
            raise RuntimeError(f"{self.kind}: the envs are closed")
        M, B = self.num_agents, int(index.numel())
        actions = pred.detach().expand(M, B, self.horizon).cpu().numpy().astype(self._dtype)
        out = {k: np.zeros((M, B)) for k in ("regret", "cost", "oracle_cost")}
        decisions = []
        for b in range(B):
            self.envs.reset(options={"index": int(index[b])})
            _, reward, _, _, info = self.envs.step(actions[:, b])
            if "regret" not in info or not np.all(info.get("_regret", True)):
                raise ContractError(f"{self.kind}: step() returned no info['regret']; accepted: "
                                    "info['regret'] = the decision's regret (>= 0) from every env")
            regret = np.asarray(info["regret"], dtype=np.float64)
            if not np.allclose(np.asarray(reward, dtype=np.float64), -regret, rtol=1e-5, atol=1e-6):
                raise ContractError(f"{self.kind}: reward {np.asarray(reward).tolist()} is not -info['regret'] "
                                    f"{regret.tolist()} at clock position {int(index[b])}")
            out["regret"][:, b] = regret
            out["cost"][:, b] = info.get("cost", regret)
            out["oracle_cost"][:, b] = info.get("oracle_cost", 0.0)
            decisions.append(np.asarray(info["decision"], dtype=np.float64) if "decision" in info else actions[:, b])
        t = {k: torch.from_numpy(v) for k, v in out.items()}
        return Evaluation(regret=t["regret"], cost=t["cost"], oracle_cost=t["oracle_cost"],
                          decision=torch.from_numpy(np.stack(decisions, axis=1)),
                          clamped=torch.zeros(M, B, dtype=torch.bool))

    def regret(self, pred: Tensor, truth: Tensor, index: Tensor, *, memory_budget: int | None = None) -> Tensor:
        return self.evaluate(pred, truth, index).regret

    def close(self) -> None:
        """Close the vector env (and its worker processes)."""
        if getattr(self, "envs", None) is not None:
            self.envs.close()
            self.envs = None

    def __del__(self) -> None:  # worker processes must not outlive the group
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
