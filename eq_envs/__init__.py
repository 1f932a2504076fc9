"""Downstream agents on real grid data as Gymnasium and PettingZoo environments.

Importing this package registers the Gymnasium ids ``eq_envs/DataCenter-v0``,
``eq_envs/EVCharging-v0`` and ``eq_envs/PhoneCharging-v0`` (one agent each,
:data:`ENV_IDS`), and ``eq_envs/PublicModel-v0`` (all agents of a population
served by one action, for Stable-Baselines3: :mod:`eq_envs.sb3_env`,
:data:`PUBLIC_MODEL_ENV_IDS`).  Data loading is lazy: nothing is read until an
environment or population is built.
"""
from __future__ import annotations

import gymnasium

__all__ = ["ENV_IDS", "PUBLIC_MODEL_ENV_IDS"]

#: Registered Gymnasium ids and their entry points.
ENV_IDS = {
    "eq_envs/DataCenter-v0": "eq_envs.agent_env:DataCenterEnv",
    "eq_envs/EVCharging-v0": "eq_envs.agent_env:EVChargingEnv",
    "eq_envs/PhoneCharging-v0": "eq_envs.agent_env:PhoneChargingEnv",
}

#: The population-level env (reward: minus the mean regret; ``info["agent_regret"]``).  Kept apart from
#: :data:`ENV_IDS`, whose envs share the per-agent ``info`` keys (regret, cost, decision, ...).
PUBLIC_MODEL_ENV_IDS = {
    "eq_envs/PublicModel-v0": "eq_envs.sb3_env:PublicModelEnv",
}

for _id, _entry in {**ENV_IDS, **PUBLIC_MODEL_ENV_IDS}.items():
    if _id not in gymnasium.registry:
        gymnasium.register(id=_id, entry_point=_entry)
