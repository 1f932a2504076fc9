"""Training objectives: the Equitable Objective, its per-agent weights, MSE and the combined loss.

Notation (paper Eq. 2): ``C̄_m`` is the mean regret of agent ``m`` over a batch,
``q >= 0`` the equity parameter and ``p = q + 1`` the exponent (the paper's tables
and its released code list ``q + 1``; use :func:`q_from_exponent` to convert).

Two equivalent forms of the Equitable Objective are offered:

* ``form="power"`` -- the paper's ``L_q = Σ_m C̄_m^(q+1)``;
* ``form="norm"``  -- ``N_q = (Σ_m C̄_m^(q+1))^(1/(q+1))``, the ``(q+1)``-norm of
  the vector of mean regrets.  ``N_q`` is a strictly increasing function of
  ``L_q``, so both have the same minimisers (paper Eq. 10), but ``N_q`` stays on
  the scale of the regrets: it lies in ``[max C̄, M^(1/(q+1)) max C̄]``.

Both are evaluated in log space: with ``z_m = (q+1) log C̄_m``,
``log L_q = logsumexp(z)`` and ``N_q = exp(logsumexp(z) / (q+1))``.
``N_q`` is finite whenever the regrets are (float32 included, e.g. ``q+1 = 1000``
with regrets in ``[1e-4, 1e3]``).  ``L_q`` itself is a number that can exceed
the dtype's range: in float32 ``exp(logsumexp(z))`` overflows to ``+inf`` as soon
as ``L_q > 3.4e38`` (``log L_q > 88.72``; e.g. ``max C̄ > 10`` with ``q+1 = 40``,
or ``max C̄ > 2.4`` with ``q+1 = 100``); float64 overflows beyond ``1.8e308``.
The power form then returns ``+inf`` and its gradient is unusable (inf/NaN):
train with ``form="norm"`` and log :func:`log_equitable_power` instead.

Zero mean regrets (``log 0 = -inf``) are masked: they contribute ``0`` to the
sum and receive a zero gradient (the true derivative ``(q+1) C̄^q`` is ``0`` at
``C̄ = 0`` for ``q > 0``; for ``q = 0`` both forms are the plain sum, with
gradient ``1``).  If every regret is zero both forms return ``0`` with a zero
(sub)gradient.  NaN regrets propagate to NaN; negative regrets (regret is ``>= 0``
by definition) raise unless they are round-off (``>= -1e-6 · max(1, max|C̄|)``),
which is treated as ``0``.
"""
from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor

#: Accepted values of the ``form`` argument.
FORMS = ("norm", "power")

#: Relative tolerance below zero accepted (as round-off) for mean regrets.
NEGATIVE_TOLERANCE = 1e-6


# --------------------------------------------------------------------------- validation
def check_q(q: float) -> float:
    """Return ``q`` as a float after checking ``q`` is a finite real ``>= 0``.

    ``q`` is the equity parameter; the exponent of the Equitable Objective is
    ``q + 1`` (what the paper's tables list).  Raises :class:`ValueError`.
    """
    if isinstance(q, bool) or not isinstance(q, Real):
        # ValueError (not TypeError) on purpose: one exception type for every invalid q
        raise ValueError(  # noqa: TRY004
            f"q must be a real number >= 0 (the exponent is q+1), got {q!r} of type {type(q).__name__}")
    qf = float(q)
    if not math.isfinite(qf) or qf < 0:
        raise ValueError(
            f"q must be finite and >= 0 (the exponent is q+1; paper tables list q+1, "
            f"convert with q_from_exponent), got q={q!r}"
        )
    return qf


def q_from_exponent(q_plus_1: float) -> float:
    """``q`` for a given exponent ``q + 1`` (the value the paper's tables and code list).

    Example: the paper's ``q+1 = 40`` is ``q = 39``.  Raises :class:`ValueError`
    unless ``q_plus_1`` is finite and ``>= 1``.
    """
    if isinstance(q_plus_1, bool) or not isinstance(q_plus_1, Real) or not math.isfinite(float(q_plus_1)):
        raise ValueError(f"exponent q+1 must be a finite real >= 1, got {q_plus_1!r}")
    if float(q_plus_1) < 1:
        raise ValueError(f"exponent q+1 must be >= 1 (q >= 0), got q+1={q_plus_1!r}")
    return check_q(float(q_plus_1) - 1.0)


def check_beta(beta: float) -> float:
    """Return ``beta`` as a float after checking ``0 <= beta <= 1`` (finite)."""
    if isinstance(beta, bool) or not isinstance(beta, Real):
        raise ValueError(  # noqa: TRY004
            f"beta must be a real number in [0, 1], got {beta!r} of type {type(beta).__name__}")
    bf = float(beta)
    if not (math.isfinite(bf) and 0.0 <= bf <= 1.0):
        raise ValueError(f"beta must be in [0, 1] (weight of the MSE term), got beta={beta!r}")
    return bf


def check_form(form: str) -> str:
    """Validate the ``form`` argument (``"norm"`` or ``"power"``)."""
    if form not in FORMS:
        raise ValueError(f"form={form!r}; accepted: {FORMS}")
    return form


# --------------------------------------------------------------------------- helpers
def _check_regret(mean_regret: Tensor) -> Tensor:
    if not isinstance(mean_regret, Tensor):
        raise TypeError(f"mean_regret must be a torch.Tensor, got {type(mean_regret).__name__}")
    if mean_regret.dim() == 0 or mean_regret.shape[-1] == 0:
        raise ValueError(f"mean_regret must have a non-empty last (agent) axis, got shape {tuple(mean_regret.shape)}")
    if not mean_regret.is_floating_point():
        mean_regret = mean_regret.to(torch.get_default_dtype())
    with torch.no_grad():
        finite = mean_regret[torch.isfinite(mean_regret)]
        if finite.numel():
            tol = NEGATIVE_TOLERANCE * max(1.0, float(finite.abs().max()))
            low = float(finite.min())
            if low < -tol:
                raise ValueError(f"mean regrets must be >= 0 (regret is non-negative by definition); min is {low:.6g}")
    return mean_regret


def _masked_log(c: Tensor) -> Tensor:
    """``log c`` with ``-inf`` for ``c <= 0`` and NaN kept, without NaN gradients."""
    pos = c > 0
    safe = torch.where(pos, c, torch.ones_like(c))
    other = torch.where(torch.isnan(c), c, torch.full_like(c, -math.inf))
    return torch.where(pos, torch.log(safe), other)


def _logsumexp(z: Tensor) -> Tensor:
    """``logsumexp`` over the last axis; ``-inf`` (with zero gradient) if all entries are ``-inf``."""
    shift = z.detach().amax(dim=-1, keepdim=True)
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    s = torch.exp(z - shift).sum(dim=-1)
    keep = (s > 0) | torch.isnan(s)
    log_s = torch.log(torch.where(keep, s, torch.ones_like(s)))
    return torch.where(keep, log_s + shift.squeeze(-1), torch.full_like(s, -math.inf))


def logsumexp_excluding_each(z: Tensor) -> Tensor:
    """``out[..., m] = log Σ_{j≠m} exp(z_j)`` over the last axis, in O(M) memory (no ``[M, M]`` tensor).

    Each entry is had from the full ``L = logsumexp(z)``:
    ``log Σ_{j≠m} exp(z_j) = L + log1p(-exp(z_m - L))``.  For every entry but
    the largest, ``z_m - L <= -log 2`` (the largest entry is at least as big
    as ``z_m``), so ``1 - exp(z_m - L) >= 1/2`` is computed without loss.  For
    the largest entry the subtraction would cancel catastrophically when that
    entry dominates (``L - z_max`` rounds to ``0``), so its leave-one-out sum is
    computed directly over the other entries.  ``-inf`` entries (zero terms)
    are allowed; a row of only ``-inf`` gives ``-inf`` everywhere, and so does
    leaving out the only finite entry.  Computed without gradient tracking.
    """
    with torch.no_grad():
        lse = _logsumexp(z).unsqueeze(-1)  # [..., 1]
        top = z.argmax(dim=-1, keepdim=True)
        lse_top = _logsumexp(z.scatter(-1, top, -math.inf)).unsqueeze(-1)
        finite = torch.isfinite(lse)
        d = z - torch.where(finite, lse, torch.zeros_like(lse))  # <= -log 2 except at the top entry
        out = torch.where(finite, lse + torch.log1p(-torch.exp(d)), lse)
        return out.scatter(-1, top, lse_top)


# --------------------------------------------------------------------------- losses
def mse_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error, averaged over every element (batch and horizon).

    ``pred`` broadcasts against ``target`` (e.g. ``[B, H]`` vs ``[B, H]``).  The
    paper's ``L_f`` (Eq. 36) sums ``||y - ŷ||²`` over the horizon and over agents;
    with inputs shared by all agents it equals ``M · H · mse_loss`` -- a constant
    factor that only rescales ``beta`` in :func:`combined_loss`.
    """
    if pred.shape[-1] != target.shape[-1]:
        raise ValueError(f"mse_loss: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in horizon")
    return ((pred - target) ** 2).mean()


def log_equitable_power(mean_regret: Tensor, q: float) -> Tensor:
    """``log Σ_m C̄_m^(q+1)`` over the last axis: the paper's loss in log space, never overflowing.

    ``-inf`` when every regret is zero.
    """
    p = check_q(q) + 1.0
    c = _check_regret(mean_regret)
    return _logsumexp(p * _masked_log(c))


def equitable_loss(mean_regret: Tensor, q: float, *, form: str = "norm") -> Tensor:
    """Equitable Objective of mean regrets ``[..., M]`` (reduced over the last, agent, axis).

    * ``form="power"``: ``Σ_m C̄_m^(q+1)`` (paper Eq. 2), computed as
      ``exp(logsumexp((q+1) log C̄))``; returns ``+inf`` when the value exceeds the
      dtype's range (see module doc: float32 beyond ``3.4e38``).
    * ``form="norm"``: ``(Σ_m C̄_m^(q+1))^(1/(q+1))`` computed as
      ``exp(logsumexp((q+1) log C̄) / (q+1))`` -- same minimisers, always finite for
      finite regrets; tends to ``max_m C̄_m`` as ``q -> inf``.

    ``q = 0`` gives the plain sum ``Σ_m C̄_m`` in both forms (computed exactly).
    Zero regrets are handled without NaN in value or gradient (module doc).
    """
    p = check_q(q) + 1.0
    check_form(form)
    c = _check_regret(mean_regret)
    if p == 1.0:
        return c.clamp_min(0).sum(dim=-1)
    lse = _logsumexp(p * _masked_log(c))
    if form == "power":
        return torch.exp(lse)
    return torch.exp(lse / p)


def equitable_weights(mean_regret: Tensor, q: float, *, form: str = "norm", normalize: bool = False) -> Tensor:
    """Per-agent chain-rule weights ``∂F/∂C̄_m`` of the Equitable Objective ``F``.

    Derivation, with ``p = q + 1`` and ``N = (Σ_k C̄_k^p)^(1/p)``:

    * power form ``F = Σ_k C̄_k^p``: ``∂F/∂C̄_m = p · C̄_m^q`` (may overflow, as ``F``);
    * norm form ``F = N``: ``∂N/∂C̄_m = (1/p) (Σ_k C̄_k^p)^(1/p - 1) · p C̄_m^q
      = (C̄_m / N)^q = exp(q (log C̄_m - log N))``, always in ``[0, 1]``.
      Equivalently ``N · softmax((q+1) log C̄)_m / C̄_m``, or
      ``softmax(q log C̄)_m · (‖C̄‖_q / ‖C̄‖_{q+1})^q``.

    With ``normalize=True`` the weights are ``softmax(q log C̄) = C̄_m^q / Σ_k C̄_k^q``
    (sum 1): the common direction of both forms' gradients, without their scale.

    Conventions: ``q = 0`` gives ones (``1/M`` normalised), the derivative of the
    sum; agents with ``C̄_m = 0`` get weight ``0`` for ``q > 0``; if all regrets
    are zero the weights are zero (uniform ``1/M`` when normalised).  Computed
    without gradient tracking; ``mean_regret`` is ``[..., M]``.
    """
    qf = check_q(q)
    check_form(form)
    p = qf + 1.0
    with torch.no_grad():
        c = _check_regret(mean_regret).detach()
        if qf == 0.0:
            w = torch.ones_like(c)
            return w / c.shape[-1] if normalize else w
        logc = _masked_log(c)
        if normalize:
            z = qf * logc
            lse = _logsumexp(z).unsqueeze(-1)
            w = torch.exp(z - torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse)))
            uniform = torch.full_like(c, 1.0 / c.shape[-1])
            return torch.where(torch.isfinite(lse), w, uniform)
        if form == "power":
            return p * torch.exp(qf * logc)
        log_n = (_logsumexp(p * logc) / p).unsqueeze(-1)
        w = torch.exp(qf * (logc - torch.where(torch.isfinite(log_n), log_n, torch.zeros_like(log_n))))
        return torch.where(torch.isfinite(log_n), w, torch.zeros_like(w))


def combined_loss(eq: Tensor | float, mse: Tensor | float | None, beta: float) -> Tensor | float:
    """``(1 - beta) · eq + beta · mse`` (paper Eq. 35/36), ``beta`` in ``[0, 1]``.

    ``beta = 0`` returns ``eq`` and ``beta = 1`` returns ``mse`` unchanged (so an
    infinite term with weight zero does not turn the result into NaN).  ``mse``
    may be ``None`` only when ``beta = 0``.
    """
    b = check_beta(beta)
    if b == 0.0:
        return eq
    if mse is None:
        raise ValueError(f"combined_loss: beta={beta} > 0 needs an MSE term, got None")
    if b == 1.0:
        return mse
    return (1.0 - b) * eq + b * mse
