"""What every update rule shares: the interface, the equitable/MSE surrogate helpers and the guarded optimizer step.

An update rule consumes a :class:`trainers.rollout.Rollout` and changes the
public model's parameters (Stable-Baselines3's ``train()``).  A rule is a class
with a registered ``name`` (:mod:`trainers.updates`) and, if it has settings of
its own, a ``Settings`` dataclass whose fields are its typed, documented
parameters (given as ``TrainConfig.update`` / ``--update KEY=VALUE``).

Two kinds exist:

* :class:`SingleStepRule` -- builds one surrogate whose gradient is the
  estimate and takes one optimizer step per rollout (the paper's estimators);
* rules that override :meth:`UpdateRule.update` to take several steps per
  rollout (:mod:`trainers.updates.eq_ppo`).

Every optimizer step goes through :func:`apply_gradients`, the divergence
guard: a non-finite loss, gradient norm or parameter raises
:class:`NonFiniteError` (the training loop turns it into a one-line
:class:`trainers.errors.DivergenceError` naming the epoch, and writes nothing).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from trainers.estimators import BASELINES, CREDITS
from trainers.objectives import check_beta, check_form, check_q, combined_loss, mse_loss
from trainers.rollout import Rollout


class NonFiniteError(ArithmeticError):
    """A loss, gradient or parameter became NaN or infinite during an update; ``what`` says which."""

    def __init__(self, what: str, value: float = math.nan) -> None:
        super().__init__(f"non-finite {what} ({value})")
        self.what, self.value = what, value


@dataclass
class UpdateStats:
    """What one rollout's update reports (means over its optimizer steps where that applies).

    ``loss``: ``(1-beta)·eq_loss + beta·mse``; ``eq_loss``: the rollout's batch
    Equitable Objective in the rule's form (NaN for the Plain PM); ``mse``: MSE
    of the mean prediction (NaN without a truth); ``grad_steps``: optimizer
    steps taken; ``extra``: rule-specific diagnostics (e.g. ``clip_fraction``).
    """

    loss: float
    eq_loss: float
    mse: float
    grad_steps: int
    extra: dict[str, float] = field(default_factory=dict)


def apply_gradients(optimizer: torch.optim.Optimizer, loss: Tensor, params: list[Tensor],
                    max_grad_norm: float | None = None) -> float:
    """``zero_grad``, ``backward``, optional norm clipping, ``step``, with the divergence guard.

    Returns the gradient norm before clipping.  Raises :class:`NonFiniteError`
    on a non-finite loss (before ``backward``), gradient norm (before ``step``:
    the parameters are untouched) or parameter (after ``step``).
    """
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteError("loss", value)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad for p in params if p.grad is not None]
    if max_grad_norm is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    else:
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
    if not torch.isfinite(norm):
        raise NonFiniteError("gradient", float(norm))
    optimizer.step()
    for p in params:
        if not torch.isfinite(p).all():
            raise NonFiniteError("parameter", math.nan)
    return float(norm)


class UpdateRule:
    """Base class: turn a rollout into parameter updates.

    Args:
        q: equity parameter (the objective's exponent is ``q + 1``).
        form: ``"norm"`` or ``"power"`` form of the Equitable Objective (``None``: the rule's default).
        beta: weight of the MSE term of the combined objective ``(1-beta)·L + beta·MSE``.
        num_samples: ``K``, predictions per agent and input the rollout must hold.
        baseline, credit: for rules that use them (``None``: the rule's default); others refuse them.
        settings: the rule's own settings (fields of its ``Settings`` dataclass).

    Class attributes a rule sets: ``name`` (its registered name), ``samples``
    (False for a rule that needs no sampled predictions), ``differentiable``
    (True if it backpropagates through the regret), ``default_form``,
    ``uses`` (which of ``baseline``/``credit`` it accepts) and ``Settings``.
    """

    name: ClassVar[str] = ""
    samples: ClassVar[bool] = True
    differentiable: ClassVar[bool] = False
    default_form: ClassVar[str] = "norm"
    uses: ClassVar[tuple[str, ...]] = ()

    @dataclass
    class Settings:
        pass

    def __init__(self, *, q: float = 0.0, form: str | None = None, beta: float = 0.0, num_samples: int = 1,
                 baseline: str | None = None, credit: str | None = None, **settings: Any) -> None:
        self.q = check_q(q)
        self.form = check_form(form or self.default_form)
        self.beta = check_beta(beta)
        for key, value in (("baseline", baseline), ("credit", credit)):
            if value is not None and key not in self.uses:
                raise ValueError(f"{key}={value!r} does not apply to update rule {self.name!r}; "
                                 f"it applies to: {', '.join(n for n, c in _users(key))}")
        self.baseline = baseline
        self.credit_kind = credit
        if baseline is not None and baseline not in BASELINES:
            raise ValueError(f"baseline={baseline!r}; accepted: {BASELINES}")
        if credit is not None and credit not in CREDITS:
            raise ValueError(f"credit={credit!r}; accepted: {CREDITS}")
        self.num_samples = int(num_samples)
        if self.samples and self.num_samples < 1:
            raise ValueError(f"num_samples={num_samples!r}; accepted: an integer >= 1")
        self.settings = make_settings(type(self), settings)

    # ------------------------------------------------------------------ what the collector must gather
    @property
    def rollout_samples(self) -> int:
        """``K`` for :func:`trainers.rollout.collect_rollout` (0: deterministic prediction only)."""
        return self.num_samples if self.samples else 0

    @property
    def wants_deterministic_regret(self) -> bool:
        """Whether the credit needs the regret of the deterministic prediction (a baseline)."""
        return False

    # ------------------------------------------------------------------ the update
    def update(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, rollout: Rollout,
               generator: torch.Generator | None = None) -> UpdateStats:
        raise NotImplementedError

    # ------------------------------------------------------------------ state kept across rollouts
    def state_dict(self) -> dict[str, Any]:
        """State that must survive a checkpoint (exact resume); empty for stateless rules."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"update rule {self.name!r} keeps no state, got {sorted(state)}")

    # ------------------------------------------------------------------ helpers for subclasses
    def mse_term(self, dist, y_true: Tensor | None) -> Tensor | None:
        """MSE of the mean prediction: differentiable when ``beta > 0``, a logged number otherwise."""
        if y_true is None:
            if self.beta > 0:
                raise ValueError(f"beta={self.beta} > 0 needs y_true for the MSE term")
            return None
        if self.beta > 0:
            return mse_loss(dist.mean, y_true)
        with torch.no_grad():
            return mse_loss(dist.mean, y_true)

    def combine(self, eq_surrogate: Tensor, eq_value: float, mse_t: Tensor | None) -> tuple[Tensor, float, float]:
        """``(surrogate, loss, mse)`` of the combined objective."""
        surrogate = combined_loss(eq_surrogate, mse_t, self.beta)
        assert isinstance(surrogate, Tensor)
        mse_f = float(mse_t.detach()) if mse_t is not None else math.nan
        loss = combined_loss(eq_value, mse_f if mse_t is not None else None, self.beta)
        return surrogate, float(loss), mse_f


class SingleStepRule(UpdateRule):
    """A rule that builds one surrogate per rollout and takes one optimizer step with it."""

    max_grad_norm: float | None = None

    def surrogate(self, rollout: Rollout) -> tuple[Tensor, UpdateStats]:
        """Scalar whose gradient is the rule's estimate (its value is not the loss), and the stats."""
        raise NotImplementedError

    def update(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, rollout: Rollout,
               generator: torch.Generator | None = None) -> UpdateStats:
        surrogate, stats = self.surrogate(rollout)
        if not math.isfinite(stats.loss):
            raise NonFiniteError("loss", stats.loss)
        params = [p for p in model.parameters() if p.requires_grad]
        stats.extra["grad_norm"] = apply_gradients(optimizer, surrogate, params, self.max_grad_norm)
        stats.grad_steps = 1
        return stats


# ---------------------------------------------------------------------- settings
def make_settings(rule: type[UpdateRule], given: dict[str, Any]):
    """Validate ``given`` against ``rule.Settings`` (names and types); one clear ``ValueError`` otherwise."""
    known = {f.name: f for f in dataclasses.fields(rule.Settings)}
    unknown = sorted(set(given) - set(known))
    if unknown:
        accepted = ", ".join(known) if known else "none (this rule has no settings of its own)"
        raise ValueError(f"update rule {rule.name!r}: unknown setting(s) {', '.join(unknown)}; accepted: {accepted}")
    try:
        settings = rule.Settings(**given)
    except TypeError as exc:
        raise ValueError(f"update rule {rule.name!r}: {exc}") from None
    check = getattr(settings, "validate", None)
    if check is not None:
        check()
    return settings


# ---------------------------------------------------------------------- registry
#: Registered update rules by name (filled by :func:`register`; :mod:`trainers.updates` imports every rule module).
RULES: dict[str, type[UpdateRule]] = {}


def register(cls: type[UpdateRule]) -> type[UpdateRule]:
    """Class decorator: make ``cls`` available by ``cls.name`` (``TrainConfig.estimator``, ``--estimator``)."""
    if not cls.name or cls.name in RULES:
        raise ValueError(f"update rule {cls.__name__}: name {cls.name!r} is empty or already registered")
    RULES[cls.name] = cls
    return cls


def _users(key: str) -> Iterable[tuple[str, type[UpdateRule]]]:
    return [(n, c) for n, c in RULES.items() if key in c.uses]
