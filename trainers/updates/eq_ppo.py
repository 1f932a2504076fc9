r"""Equitable PPO: a clipped-ratio, multi-epoch update on per-agent equitable credit.

The paper (Eq. 3/4) and :mod:`trainers.updates.reinforce_weighted` take one
gradient step per rollout, so every sampled prediction is used once.  This rule
re-uses each rollout for several passes of minibatch steps, as PPO does
(Schulman et al. 2017; the structure of Stable-Baselines3's ``PPO.train``), but
with the Equitable Objective's per-agent credit where PPO has a scalar reward.
The maths, beside the paper's Eq. 3-4, is in ``docs/trainer.md``; in short:

1. **Weights from running means.**  ``R_m`` is an exponential moving average
   (rate ``weight_rate``) of agent ``m``'s mean regret over past rollouts; the
   weights are ``w_m = ∂F/∂C̄_m`` at ``R`` (norm form: ``(R_m / ‖R‖_{q+1})^q``).
   They are computed *before* ``R`` absorbs the current rollout (the first
   rollout uses its own means), so they do not depend on the samples they
   weight: no ``O(1/B)`` plug-in bias as the in-batch linear credit has, and
   far less variance than weights from one batch of ``B`` inputs.  The price is
   lag: ``R`` describes the policy of the last ``~1/weight_rate`` rollouts.
   ``F(R)`` is the objective on the whole training split's per-agent means,
   which is what held-out equity is measured on, rather than the batch
   objective ``E[F(C̄_batch)]`` (the two differ by Jensen's gap at finite ``B``).
2. **Credit (a cost advantage).**  ``A_{k,m,i} = w_m (C_{k,m,i} - b_{k,m,i})``
   with ``b`` the leave-one-out mean of the other ``K - 1`` samples (``K >= 2``)
   or the regret of the deterministic prediction; normalised to zero mean and
   unit standard deviation over the rollout (``normalize_advantage``).
3. **Clipped surrogate.**  With ``r = σ_θ(ŷ|x) / σ_old(ŷ|x)`` (``σ_old`` is the
   policy that sampled), each minibatch minimises
   ``Σ_m mean_{k,i} max(r·A, clip(r, 1-ε, 1+ε)·A)`` -- PPO's pessimistic bound
   for a cost.  At ``r = 1`` its gradient is ``Σ_m mean_{k,i} A ∇log σ_θ``:
   REINFORCE with this credit (tested).
4. ``epochs`` passes (default 4) of ``minibatches`` (default 4) minibatches (split over the rollout's
   inputs, all agents and samples of an input together), Adam, gradient-norm
   clipping at ``max_grad_norm``, and an early stop of the passes once the
   approximate KL ``mean((r - 1) - log r)`` exceeds ``1.5 · target_kl``
   (Stable-Baselines3's rule).

The combined objective (``beta > 0``) adds ``beta · MSE`` of the mean
prediction on each minibatch and scales the clipped term by ``1 - beta``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from trainers.objectives import combined_loss, equitable_loss, equitable_weights, mse_loss
from trainers.rollout import Rollout
from trainers.updates.base import NonFiniteError, UpdateRule, UpdateStats, apply_gradients, register
from trainers.updates.credit import baseline_regret


def clipped_surrogate(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantage: torch.Tensor,
                      clip_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``Σ_m mean_{k,i} max(r·A, clip(r)·A)`` over ``[K, M, b]`` tensors, and the ratio ``r`` (for diagnostics)."""
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = ratio * advantage
    clipped = ratio.clamp(1.0 - clip_range, 1.0 + clip_range) * advantage
    per_sample = torch.maximum(unclipped, clipped)
    return per_sample.mean(dim=(0, 2)).sum(), ratio


@register
class EqPPO(UpdateRule):
    """Clipped-ratio, multi-epoch update on the Equitable Objective (module doc)."""

    name = "eq_ppo"
    uses = ("baseline",)

    @dataclass
    class Settings:
        """Settings of ``eq_ppo`` (``TrainConfig.update`` / ``--update KEY=VALUE``).

        Attributes:
            epochs: passes over each rollout.
            minibatches: minibatches per pass; the rollout's inputs are split among them.
            clip_range: ``ε`` of the ratio clip.
            target_kl: stop a rollout's passes when the approximate KL exceeds ``1.5 · target_kl``
                (``None``: never).
            max_grad_norm: clip the gradient's global norm to this (``None``: no clipping).
            weight_rate: rate of the running per-agent mean regrets the equitable weights come from,
                in ``(0, 1]`` (1: the previous rollout's means only).
            normalize_advantage: standardise the credit over the rollout.
        """

        epochs: int = 4
        minibatches: int = 4
        clip_range: float = 0.2
        target_kl: float | None = None
        max_grad_norm: float | None = 0.5
        weight_rate: float = 0.1
        normalize_advantage: bool = True

        def validate(self) -> None:
            for name in ("epochs", "minibatches"):
                v = getattr(self, name)
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise ValueError(f"update rule 'eq_ppo': {name}={v!r}; accepted: an integer >= 1")
            checks = {"clip_range": (self.clip_range, False), "target_kl": (self.target_kl, True),
                      "max_grad_norm": (self.max_grad_norm, True)}
            for name, (v, optional) in checks.items():
                if v is None and optional:
                    continue
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
                    raise ValueError(f"update rule 'eq_ppo': {name}={v!r}; accepted: a number > 0"
                                     + (" or null" if optional else ""))
            r = self.weight_rate
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1:
                raise ValueError(f"update rule 'eq_ppo': weight_rate={r!r}; accepted: a number in (0, 1]")
            if not isinstance(self.normalize_advantage, bool):
                raise ValueError(f"update rule 'eq_ppo': normalize_advantage={self.normalize_advantage!r}; "
                                 "accepted: true or false")

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        if self.baseline == "loo" and self.num_samples < 2:
            raise ValueError("baseline='loo' needs num_samples >= 2 (the mean over the other samples of the same input)")
        #: Running per-agent mean regrets ``R`` ``[M]`` (float64); ``None`` before the first rollout.
        self.running: torch.Tensor | None = None

    @property
    def baseline_kind(self) -> str:
        return self.baseline or ("loo" if self.num_samples >= 2 else "deterministic")

    @property
    def wants_deterministic_regret(self) -> bool:
        return self.baseline_kind == "deterministic"

    # ------------------------------------------------------------------ credit
    def equitable_weights(self, rollout: Rollout) -> torch.Tensor:
        """``w_m`` ``[M]`` from the running means before this rollout; then fold the rollout into them."""
        assert rollout.regret is not None
        cbar = rollout.regret.mean(dim=(0, 2)).double()
        if self.running is None:
            self.running = cbar.clone()
        w = equitable_weights(self.running, self.q, form=self.form)
        rate = self.settings.weight_rate
        self.running = (1.0 - rate) * self.running + rate * cbar
        return w

    def assign_credit(self, rollout: Rollout) -> torch.Tensor:
        """Set ``rollout.credit`` to ``w_m (C - b)`` and return the (normalised) advantage ``[K, M, B]``."""
        assert rollout.regret is not None
        with torch.no_grad():
            w = self.equitable_weights(rollout).to(rollout.regret.dtype)
            rollout.credit = w[None, :, None] * (rollout.regret - baseline_regret(rollout, self.baseline_kind))
            adv = rollout.credit
            if self.settings.normalize_advantage and adv.numel() > 1:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        return adv.float()

    # ------------------------------------------------------------------ update
    def update(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, rollout: Rollout,
               generator: torch.Generator | None = None) -> UpdateStats:
        s = self.settings
        assert rollout.pred is not None and rollout.log_prob is not None and rollout.regret is not None
        with torch.no_grad():  # the rollout's objective values, at the parameters that sampled it
            eq_value = float(equitable_loss(rollout.regret.mean(dim=-1), self.q, form=self.form).mean())
            mse = math.nan if rollout.y_true is None else float(mse_loss(rollout.dist.mean, rollout.y_true))
        if not math.isfinite(eq_value):
            raise NonFiniteError("loss", eq_value)
        adv = self.assign_credit(rollout)
        params = [p for p in model.parameters() if p.requires_grad]
        per_agent = rollout.per_agent_inputs
        B = rollout.batch_size
        n_mb = min(s.minibatches, B)
        steps, clipped, kls, losses = 0, [], [], []
        stop = False
        for epoch in range(s.epochs):
            # one minibatch is the whole rollout, in its own order; otherwise a fresh shuffle per pass
            order = torch.arange(B) if n_mb == 1 else torch.randperm(B, generator=generator)
            for mb in order.chunk(n_mb):
                # the first step of the first pass re-uses the collector's forward pass (same parameters)
                if epoch == 0 and steps == 0 and n_mb == 1:
                    dist = rollout.dist
                else:
                    dist = model.distribution(rollout.x[:, mb] if per_agent else rollout.x[mb])
                log_prob = dist.log_prob(rollout.pred[:, :, mb])
                pg, ratio = clipped_surrogate(log_prob, rollout.log_prob[:, :, mb], adv[:, :, mb], s.clip_range)
                with torch.no_grad():
                    log_ratio = torch.log(ratio)
                    approx_kl = float(((ratio - 1.0) - log_ratio).mean())
                if s.target_kl is not None and approx_kl > 1.5 * s.target_kl:
                    stop = True
                    break
                y = None
                if rollout.y_true is not None:
                    y = rollout.y_true[:, mb] if per_agent else rollout.y_true[mb]
                mse_t = self.mse_term(dist, y)
                loss = self.combine(pg, 0.0, mse_t)[0]
                apply_gradients(optimizer, loss, params, s.max_grad_norm)
                steps += 1
                clipped.append(float(((ratio - 1.0).abs() > s.clip_range).float().mean()))
                kls.append(approx_kl)
                losses.append(float(loss.detach()))
            if stop:
                break
        loss_value = eq_value if self.beta == 0 else float(combined_loss(eq_value, mse, self.beta))
        extra = {"clip_fraction": sum(clipped) / max(len(clipped), 1), "approx_kl": sum(kls) / max(len(kls), 1),
                 "passes": epoch + (0 if stop else 1), "surrogate": sum(losses) / max(len(losses), 1)}
        return UpdateStats(loss=loss_value, eq_loss=eq_value, mse=mse, grad_steps=steps, extra=extra)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {} if self.running is None else {"running": self.running.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unknown = set(state) - {"running"}
        if unknown:
            raise ValueError(f"update rule 'eq_ppo': unknown state {sorted(unknown)}")
        self.running = state["running"].double().clone() if "running" in state else None
