"""The methods ``eqpm benchmark`` compares, behind one interface (:mod:`trainers.baselines.base`).

==========================  ======  =====================================================================
method (``--methods``)      family  what trains the public model
==========================  ======  =====================================================================
``eq_ppo``                  ours    clipped-ratio multi-epoch update on running equitable weights (K = 2)
``reinforce_weighted``      ours    chain-rule REINFORCE, leave-one-out baseline (K = 4)
``reinforce_paper``         ours    the paper's Eq. 3/4 REINFORCE on the norm form (K = 1)
``pathwise``                ours    reparameterisation gradient (differentiable agents only)
``mse``                     ours    the Plain PM: MSE of the mean prediction
``PPO util`` / ``equitable``  sb3   Stable-Baselines3 PPO on ``PublicModelEnv`` (mean / equitable reward)
``A2C util`` / ``equitable``  sb3   Stable-Baselines3 A2C, the same
``SAC util`` / ``equitable``  sb3   Stable-Baselines3 SAC, the same
``PPO util (window)`` / ...   sb3   PPO through ``WindowNormalizeWrapper`` (each window standardised)
``SPO+``                    dfl     PyEPO's SPO+ loss through the top-k slot problem (slot agents only)
``PFYL``                    dfl     PyEPO's perturbed Fenchel-Young loss, the same
==========================  ======  =====================================================================

Adding a method: a :class:`~trainers.baselines.base.Method` subclass in its
own module and a :func:`~trainers.baselines.base.register` call below.
"""
from __future__ import annotations

from trainers.baselines.base import FAMILIES, METHODS, Counts, Method, MethodRun, register
from trainers.baselines.dfl_training import DFLMethod
from trainers.baselines.equitable import UpdateRuleMethod
from trainers.baselines.sb3 import SB3Method

__all__ = ["DEFAULT_METHODS", "FAMILIES", "METHODS", "Counts", "Method", "MethodRun", "register"]

register(UpdateRuleMethod("eq_ppo", "clipped-ratio, multi-epoch update on running equitable weights, K = 2, "
                                    "leave-one-out baseline, the rule's default settings",
                          estimator="eq_ppo", num_samples=2))
register(UpdateRuleMethod("eq_ppo+mse", "eq_ppo on the combined objective (1 - beta) L + beta MSE with beta = 0.5 "
                                        "(the paper's Table 4 idea): the MSE of the mean prediction pins the level a "
                                        "ranking agent ignores; uses the true signal, as the Plain PM does",
                          estimator="eq_ppo", num_samples=2, beta=0.5))
register(UpdateRuleMethod("reinforce_weighted", "chain-rule REINFORCE with difference credit, leave-one-out "
                                                "baseline, K = 4, one step per rollout",
                          estimator="reinforce_weighted", baseline="loo", num_samples=4))
register(UpdateRuleMethod("reinforce_paper", "the paper's Eq. 3/4 REINFORCE, K = 1, on the norm form (in the power "
                                             "form at q + 1 = 20 its gradients overflow float32)",
                          estimator="reinforce_paper", num_samples=1, form="norm"))
register(UpdateRuleMethod("pathwise", "reparameterisation gradient of the batch objective, K = 1",
                          estimator="pathwise", num_samples=1))
register(UpdateRuleMethod("mse", "the Plain PM: MSE of the mean prediction", objective="mse"))
for _algo in ("PPO", "A2C", "SAC"):
    for _equitable in (False, True):
        register(SB3Method(_algo, _equitable))
for _equitable in (False, True):  # the baseline of a window-normalised public model (input_norm="window")
    register(SB3Method("PPO", _equitable, window=True))
register(DFLMethod("spo+", "SPO+", "SPO+ loss (Elmachtoub & Grigas 2022) through PyEPO's SPOPlus on the top-k "
                                   "slot problem"))
register(DFLMethod("pfyl", "PFYL", "perturbed Fenchel-Young loss (Berthet et al. 2020) through PyEPO's "
                                   "perturbedFenchelYoung, 10 draws, sigma 1"))

#: What ``eqpm benchmark`` runs without ``--methods`` (those that apply to the population): issue 9's comparison.
DEFAULT_METHODS = ("eq_ppo", "reinforce_weighted", "pathwise", "mse", "PPO util", "PPO equitable", "A2C util",
                   "SAC util", "SPO+", "PFYL")
