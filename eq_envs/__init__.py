"""Downstream agents on real grid data as Gymnasium and PettingZoo environments.

Importing this package registers the Gymnasium ids ``eq_envs/DataCenter-v0``,
``eq_envs/EVCharging-v0`` and ``eq_envs/PhoneCharging-v0``.  Data loading is
lazy: nothing is read until an environment or population is built.
"""
from __future__ import annotations

import gymnasium

__all__ = ["ENV_IDS"]

#: Registered Gymnasium ids and their entry points.
ENV_IDS = {
    "eq_envs/DataCenter-v0": "eq_envs.agent_env:DataCenterEnv",
    "eq_envs/EVCharging-v0": "eq_envs.agent_env:EVChargingEnv",
    "eq_envs/PhoneCharging-v0": "eq_envs.agent_env:PhoneChargingEnv",
}

for _id, _entry in ENV_IDS.items():
    if _id not in gymnasium.registry:
        gymnasium.register(id=_id, entry_point=_entry)
