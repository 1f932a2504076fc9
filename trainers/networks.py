"""Public-model networks: backbones, stochastic heads and the :class:`PublicModel` policy ``σ_θ(ŷ | x)``.

Inputs are the last ``L`` values of the public signal, ``[B, L]`` or ``[B, L, F]``
(``F`` features per time step; ``[B, L]`` means ``F = 1``).  A backbone maps
them to features ``[B, D]``; a head maps features to a distribution over the
prediction ``ŷ`` of shape ``[B, H]`` (``H`` = horizon), as a
``torch.distributions.Independent`` object with batch shape ``[B]`` and event
shape ``[H]`` (``log_prob`` sums over the horizon).

Heads parametrise a positive *mean* ``softplus(a) + mean_floor`` (the Gaussian
head also an unconstrained one, ``mean_activation="identity"``) and a scale.
The log-scale is soft-clamped to ``log_std_bounds = (lo, hi)`` by
``lo + (hi - lo) · sigmoid(raw)`` (smooth, so the gradient never vanishes
exactly at a bound); it is either one learned value per horizon step
(``state_dependent_scale=False``) or a linear function of the features.

* :class:`GaussianHead`: ``Normal(mean, std)``; samples can be negative or
  below a downstream agent's floor (agents record such clamping).  Mean = mode.
* :class:`LogNormalHead`: positive samples; ``log ŷ ~ Normal(log mean - s²/2, s)``
  so that ``E[ŷ] = mean``.  Its mode ``mean · exp(-3 s²/2)`` is below the mean.

Deterministic inference (:meth:`PublicModel.mean`) returns the distribution's
*mean*; for the Gaussian head this is also the mode, i.e. the paper's
``argmax_ŷ σ_θ(ŷ | x)``.  :meth:`PublicModel.mode` gives the mode for either head.

Models are described by a JSON-able config (:func:`build_public_model`) and
saved as config + ``state_dict`` (:func:`save_public_model`); loading uses
``torch.load(..., weights_only=True)`` and refuses files holding anything else.

``input_norm="window"`` (reversible instance normalisation, Kim et al., ICLR
2022): the backbone sees each input window standardised by its own mean ``m``
and spread ``s`` (per feature), the Gaussian head predicts in those units, and
the distribution is mapped back, ``Normal(m + s·μ, s·σ)`` with ``m, s`` of
feature 0 (the predicted series).  The prediction then moves with the
window's level and amplitude (tested: affine-equivariant), which carries a
model across seasons; the policy's scale is relative to the window's spread,
so ``--scale fixed|anneal`` values are too.  ``benchmarks/bench_input_norm.py``
measures it.
"""
from __future__ import annotations

import copy
import json
import math
import os
import pickle
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, LogNormal, Normal

FILE_FORMAT = "eqpm-public-model"
FILE_VERSION = 1


def _as_sequence(x: Tensor) -> Tensor:
    """``[B, L]`` -> ``[B, L, 1]``; ``[B, L, F]`` unchanged."""
    if x.dim() == 2:
        return x.unsqueeze(-1)
    if x.dim() == 3:
        return x
    raise ValueError(f"public-model input must be [B, L] or [B, L, F], got shape {tuple(x.shape)}")


_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


# --------------------------------------------------------------------------- backbones
class LSTMBackbone(nn.Module):
    """LSTM over the time axis; features = the last step's hidden state ``[B, hidden_size]``.

    The paper's data-center study uses ``hidden_size = 50``.
    """

    feature_dim: int

    def __init__(self, input_size: int = 1, hidden_size: int = 50, num_layers: int = 1) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.feature_dim = int(hidden_size)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.lstm(_as_sequence(x))
        return out[:, -1]


class PositionalEncoding(nn.Module):
    """Fixed sinusoidal positional encoding added along the time axis of ``[B, L, d]``."""

    pe: Tensor

    def __init__(self, d_model: int, max_len: int = 512) -> None:
        super().__init__()
        pos = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)[:, : d_model // 2]
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, h: Tensor) -> Tensor:
        if h.shape[1] > self.pe.shape[0]:
            raise ValueError(f"sequence length {h.shape[1]} exceeds the positional encoding's max_len {self.pe.shape[0]}")
        return h + self.pe[: h.shape[1]].to(h.dtype)


class TransformerBackbone(nn.Module):
    """Small Transformer encoder over the *time* axis of ``[B, L, F]``.

    Each time step is projected to ``d_model``, gets a sinusoidal positional
    encoding and attends over the ``L`` steps of its own sequence (the authors'
    released code fed the batch axis as the sequence axis instead).  Features are
    the last step's output (``pool="last"``) or the mean over steps
    (``pool="mean"``).  The paper's EV study used feature size 250 with an
    encoder-decoder; here the decoder is the head (``d_model=250, nhead=5``
    reproduces the width).
    """

    feature_dim: int

    def __init__(self, input_size: int = 1, d_model: int = 64, nhead: int = 4, num_layers: int = 1,
                 dim_feedforward: int | None = None, dropout: float = 0.0, pool: str = "last",
                 max_len: int = 512) -> None:
        super().__init__()
        if d_model % nhead != 0:
            raise ValueError(f"TransformerBackbone: d_model={d_model} must be divisible by nhead={nhead}")
        if pool not in ("last", "mean"):
            raise ValueError(f"TransformerBackbone: pool={pool!r}; accepted: ('last', 'mean')")
        self.proj = nn.Linear(input_size, d_model)
        self.pos = PositionalEncoding(d_model, max_len)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward=dim_feedforward or 2 * d_model,
                                           dropout=dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=num_layers, enable_nested_tensor=False)
        self.pool = pool
        self.feature_dim = int(d_model)

    def forward(self, x: Tensor) -> Tensor:
        h = self.encoder(self.pos(self.proj(_as_sequence(x))))
        return h[:, -1] if self.pool == "last" else h.mean(dim=1)


class MLPBackbone(nn.Module):
    """Flatten ``[B, L, F]`` to ``[B, L·F]`` and apply ``hidden`` fully connected layers.

    ``hidden=()`` gives the identity features (the head is then a linear model).
    """

    feature_dim: int

    def __init__(self, seq_len: int = 12, input_size: int = 1, hidden: tuple[int, ...] | list[int] = (64, 64),
                 activation: str = "relu") -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"MLPBackbone: activation={activation!r}; accepted: {tuple(_ACTIVATIONS)}")
        self.seq_len, self.input_size = int(seq_len), int(input_size)
        layers: list[nn.Module] = []
        width = self.seq_len * self.input_size
        for h in hidden:
            layers += [nn.Linear(width, int(h)), _ACTIVATIONS[activation]()]
            width = int(h)
        self.net = nn.Sequential(*layers)
        self.feature_dim = width

    def forward(self, x: Tensor) -> Tensor:
        s = _as_sequence(x)
        if s.shape[1] != self.seq_len or s.shape[2] != self.input_size:
            raise ValueError(f"MLPBackbone: expected [B, {self.seq_len}, {self.input_size}] input, got {tuple(x.shape)}")
        return self.net(s.flatten(1))


# --------------------------------------------------------------------------- heads
def _softplus_inverse(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class StochasticHead(nn.Module):
    """Base of the heads: a mean and a soft-clamped log-scale; ``forward`` returns the distribution.

    ``mean_activation="softplus"`` (default) keeps the mean above ``mean_floor``; ``"identity"`` leaves it
    unconstrained (Gaussian head only: what a model with ``input_norm="window"`` predicts in the window's units).
    """

    horizon: int
    mean_activations: tuple[str, ...] = ("softplus", "identity")

    def __init__(self, in_features: int, horizon: int = 1, *, mean_floor: float = 1e-3,
                 state_dependent_scale: bool = False, init_std: float = 0.5,
                 log_std_bounds: tuple[float, float] = (-5.0, 2.0), init_mean: float | None = None,
                 mean_activation: str = "softplus") -> None:
        super().__init__()
        lo, hi = (float(b) for b in log_std_bounds)
        if not lo < hi:
            raise ValueError(f"{type(self).__name__}: log_std_bounds must satisfy lo < hi, got {log_std_bounds}")
        if not lo < math.log(init_std) < hi:
            raise ValueError(f"{type(self).__name__}: init_std={init_std} outside exp(log_std_bounds) = "
                             f"({math.exp(lo):.3g}, {math.exp(hi):.3g})")
        if mean_floor < 0:
            raise ValueError(f"{type(self).__name__}: mean_floor must be >= 0, got {mean_floor}")
        if mean_activation not in self.mean_activations:
            raise ValueError(f"{type(self).__name__}: mean_activation={mean_activation!r}; "
                             f"accepted: {self.mean_activations}")
        self.horizon, self.mean_floor = int(horizon), float(mean_floor)
        self.mean_activation = mean_activation
        self.log_std_bounds = (lo, hi)
        self.mean_layer = nn.Linear(in_features, self.horizon)
        if init_mean is not None:
            positive = mean_activation == "softplus"
            if positive and not init_mean > mean_floor:
                raise ValueError(f"{type(self).__name__}: init_mean={init_mean} must exceed mean_floor={mean_floor}")
            with torch.no_grad():
                self.mean_layer.weight.mul_(0.01)
                self.mean_layer.bias.fill_(_softplus_inverse(init_mean - mean_floor) if positive else init_mean)
        u = (math.log(init_std) - lo) / (hi - lo)
        raw0 = math.log(u / (1.0 - u))
        self.state_dependent_scale = bool(state_dependent_scale)
        if self.state_dependent_scale:
            self.scale_layer = nn.Linear(in_features, self.horizon)
            with torch.no_grad():
                self.scale_layer.weight.zero_()
                self.scale_layer.bias.fill_(raw0)
        else:
            self.raw_log_std = nn.Parameter(torch.full((self.horizon,), raw0))

    def _check_global_scale(self, what: str) -> None:
        if self.state_dependent_scale:
            raise ValueError(f"{type(self).__name__}: {what} needs a global scale (state_dependent_scale=False)")

    def scale_value(self) -> Tensor:
        """The current scale ``exp(log_std)`` ``[H]`` (heads with a global scale only)."""
        self._check_global_scale("scale_value")
        lo, hi = self.log_std_bounds
        return torch.exp(lo + (hi - lo) * torch.sigmoid(self.raw_log_std.detach()))

    @torch.no_grad()
    def set_scale(self, std: float) -> None:
        """Set the scale to ``std`` for every horizon step (inverse of the soft clamp; heads with a global scale)."""
        self._check_global_scale("set_scale")
        lo, hi = self.log_std_bounds
        if not lo < math.log(std) < hi:
            raise ValueError(f"{type(self).__name__}: scale {std} outside exp(log_std_bounds) = "
                             f"({math.exp(lo):.3g}, {math.exp(hi):.3g})")
        u = (math.log(std) - lo) / (hi - lo)
        self.raw_log_std.fill_(math.log(u / (1.0 - u)))

    def mean_and_log_std(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Mean ``[B, H]`` (positive unless ``mean_activation="identity"``) and log-scale ``[B, H]`` (within
        ``log_std_bounds``)."""
        a = self.mean_layer(features)
        mean = nn.functional.softplus(a) + self.mean_floor if self.mean_activation == "softplus" else a
        raw = self.scale_layer(features) if self.state_dependent_scale else self.raw_log_std.expand_as(mean)
        lo, hi = self.log_std_bounds
        return mean, lo + (hi - lo) * torch.sigmoid(raw)


class GaussianHead(StochasticHead):
    """``ŷ ~ Normal(mean, std)`` per horizon step; mean ``softplus(·) + mean_floor > 0`` (or unconstrained).

    ``log std`` is soft-clamped to ``log_std_bounds`` (default ``(-5, 2)``:
    ``std`` in ``(0.0067, 7.39)``, suited to the paper's 0--10 scaled signals).
    """

    def forward(self, features: Tensor) -> Distribution:
        mean, log_std = self.mean_and_log_std(features)
        return Independent(Normal(mean, log_std.exp()), 1)


class LogNormalHead(StochasticHead):
    """``log ŷ ~ Normal(log mean - s²/2, s)``: positive samples with ``E[ŷ] = mean`` (a positive mean only).

    ``s`` (the scale of ``log ŷ``) is soft-clamped to ``exp(log_std_bounds)``,
    default ``(-5, 0.5)``, i.e. ``s`` in ``(0.0067, 1.65)``.
    """

    mean_activations = ("softplus",)

    def __init__(self, in_features: int, horizon: int = 1, *, mean_floor: float = 1e-3,
                 state_dependent_scale: bool = False, init_std: float = 0.1,
                 log_std_bounds: tuple[float, float] = (-5.0, 0.5), init_mean: float | None = None,
                 mean_activation: str = "softplus") -> None:
        super().__init__(in_features, horizon, mean_floor=mean_floor, state_dependent_scale=state_dependent_scale,
                         init_std=init_std, log_std_bounds=log_std_bounds, init_mean=init_mean,
                         mean_activation=mean_activation)

    def forward(self, features: Tensor) -> Distribution:
        mean, log_s = self.mean_and_log_std(features)
        s = log_s.exp()
        return Independent(LogNormal(torch.log(mean) - 0.5 * s * s, s), 1)


# --------------------------------------------------------------------------- model
def reparameterized_sample(dist: Distribution, eps: Tensor) -> Tensor:
    """Sample of ``dist`` (a head's Independent Normal/LogNormal) from standard-normal noise ``eps``."""
    base = dist.base_dist if isinstance(dist, Independent) else dist
    if isinstance(base, LogNormal):
        return torch.exp(base.loc + base.scale * eps)
    if isinstance(base, Normal):
        return base.loc + base.scale * eps
    raise TypeError(f"sampling with a generator supports Normal/LogNormal heads, got {type(base).__name__}")


class PublicModel(nn.Module):
    """Stochastic public model ``σ_θ(ŷ | x)`` = backbone + head.

    ``x`` is ``[B, L]`` or ``[B, L, F]``; distributions are over ``[B, H]``.
    """

    head: StochasticHead

    def __init__(self, backbone: nn.Module, head: StochasticHead, config: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.config: dict[str, Any] = copy.deepcopy(config) if config is not None else {}
        self.input_norm = str(self.config.get("input_norm", "none"))
        if self.input_norm not in INPUT_NORMS:
            raise ValueError(f"PublicModel: input_norm={self.input_norm!r}; accepted: {INPUT_NORMS}")
        if self.input_norm == "window" and not isinstance(head, GaussianHead):
            raise ValueError(f"PublicModel: input_norm='window' needs the Gaussian head, got {type(head).__name__}")

    @property
    def horizon(self) -> int:
        return int(self.head.horizon)

    def distribution(self, x: Tensor) -> Distribution:
        """``σ_θ(· | x)``: batch shape ``[B]``, event shape ``[H]``.

        Per-agent inputs ``[M, B, L]`` (or ``[M, B, L, F]``; the chunked layout
        of :mod:`eq_envs.population`) give batch shape ``[M, B]``.
        """
        per_agent = x.dim() == 4 or (x.dim() == 3 and int(self.config.get("input_size", 1)) == 1 and x.shape[-1] != 1)
        if per_agent:
            M, B = x.shape[:2]
            dist = self._flat_distribution(x.reshape(M * B, *x.shape[2:]))
            base = dist.base_dist
            H = base.loc.shape[-1]
            return Independent(type(base)(base.loc.reshape(M, B, H), base.scale.reshape(M, B, H)), 1)
        return self._flat_distribution(x)

    def _flat_distribution(self, x: Tensor) -> Distribution:
        if self.input_norm == "none":
            return self.head(self.backbone(x))
        # Reversible instance normalisation (Kim et al., ICLR 2022, "RevIN"): the backbone sees each window
        # standardised by its own mean and spread, and the prediction is mapped back with them.  A shift of the
        # signal's level or daily amplitude between the training and the held-out months then changes the
        # prediction by the same affine map, which leaves a ranking agent's decision unchanged.
        s = _as_sequence(x)
        mean = s.mean(dim=1, keepdim=True)  # [B, 1, F]
        spread = s.std(dim=1, unbiased=False, keepdim=True).clamp_min(WINDOW_NORM_EPS)
        base = self.head(self.backbone((s - mean) / spread)).base_dist
        loc, scale = mean[:, :, 0], spread[:, :, 0]  # [B, 1]: the predicted series is feature 0
        return Independent(Normal(loc + scale * base.loc, scale * base.scale), 1)

    forward = distribution

    def sample(self, x: Tensor, num_samples: int = 1, *, rsample: bool = False,
               generator: torch.Generator | None = None) -> Tensor:
        """``num_samples`` draws ``[num_samples, B, H]``.

        ``rsample=True`` keeps the reparameterised graph (pathwise gradients);
        otherwise the result is detached.  ``generator`` draws the noise from a
        given ``torch.Generator`` instead of the global RNG.
        """
        dist = self.distribution(x)
        shape = (int(num_samples), *dist.batch_shape, *dist.event_shape)
        if generator is not None:
            eps = torch.randn(shape, generator=generator, device=dist.mean.device, dtype=dist.mean.dtype)
            y = reparameterized_sample(dist, eps)
        else:
            y = dist.rsample((int(num_samples),))
        return y if rsample else y.detach()

    def mean(self, x: Tensor) -> Tensor:
        """Deterministic prediction ``[B, H]``: the distribution's mean (= mode for the Gaussian head)."""
        return self.distribution(x).mean

    def mode(self, x: Tensor) -> Tensor:
        """``argmax_ŷ σ_θ(ŷ | x)`` ``[B, H]`` (the paper's deterministic counterpart)."""
        return self.distribution(x).mode

    def log_prob(self, x: Tensor, y: Tensor) -> Tensor:
        """``log σ_θ(y | x)`` summed over the horizon: ``y`` ``[..., B, H]`` -> ``[..., B]``."""
        return self.distribution(x).log_prob(y)


# --------------------------------------------------------------------------- config / io
_BACKBONES: dict[str, type[LSTMBackbone | TransformerBackbone | MLPBackbone]] = {
    "lstm": LSTMBackbone, "transformer": TransformerBackbone, "mlp": MLPBackbone}
_HEADS: dict[str, type[StochasticHead]] = {"gaussian": GaussianHead, "lognormal": LogNormalHead}
_CONFIG_KEYS = ("backbone", "backbone_kwargs", "head", "head_kwargs", "seq_len", "input_size", "horizon", "input_norm")
#: ``input_norm``: ``"none"``, or ``"window"`` (each input window standardised, the prediction mapped back; RevIN).
INPUT_NORMS = ("none", "window")
#: Smallest spread a window is divided by (the signals are scaled to about 0--10).
WINDOW_NORM_EPS = 1e-2
#: ``head_kwargs`` for ``input_norm="window"``: an unconstrained mean starting at the window's mean, and a scale
#: of half the window's spread.
WINDOW_HEAD = {"init_mean": 0.0, "init_std": 0.5, "mean_activation": "identity"}


def default_config() -> dict[str, Any]:
    """The default config: the paper's data-center model (LSTM hidden 50, Gaussian head, L=12, H=1)."""
    return {"backbone": "lstm", "backbone_kwargs": {"hidden_size": 50}, "head": "gaussian", "head_kwargs": {},
            "seq_len": 12, "input_size": 1, "horizon": 1}


def build_public_model(config: dict[str, Any] | None = None) -> PublicModel:
    """Build a :class:`PublicModel` from a JSON-able config.

    Keys (all optional, defaults from :func:`default_config`): ``backbone``
    (``"lstm" | "transformer" | "mlp"``), ``backbone_kwargs`` (constructor
    arguments, e.g. ``{"hidden_size": 50}``, ``{"d_model": 250, "nhead": 5}``,
    ``{"hidden": [64, 64]}``), ``head`` (``"gaussian" | "lognormal"``),
    ``head_kwargs`` (e.g. ``{"init_mean": 5.0, "state_dependent_scale": true}``),
    ``seq_len`` (L), ``input_size`` (F), ``horizon`` (H), ``input_norm``
    (``"none"``, or ``"window"``: each input window standardised by its own
    mean and spread and the prediction mapped back -- RevIN; needs the Gaussian
    head with ``mean_activation="identity"``; :data:`WINDOW_HEAD` is a head
    config for it).  The full config is kept on ``model.config``.
    """
    cfg = default_config()
    given = dict(config or {})
    unknown = sorted(set(given) - set(_CONFIG_KEYS))
    if unknown:
        raise ValueError(f"build_public_model: unknown config keys {unknown}; accepted: {list(_CONFIG_KEYS)}")
    if "backbone" in given and given["backbone"] != cfg["backbone"] and "backbone_kwargs" not in given:
        cfg["backbone_kwargs"] = {}
    cfg.update(copy.deepcopy(given))
    try:
        json.dumps(cfg)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"build_public_model: config must be JSON-able: {exc}") from None
    if cfg["backbone"] not in _BACKBONES:
        raise ValueError(f"build_public_model: backbone={cfg['backbone']!r}; accepted: {tuple(_BACKBONES)}")
    if cfg["head"] not in _HEADS:
        raise ValueError(f"build_public_model: head={cfg['head']!r}; accepted: {tuple(_HEADS)}")
    bkw = dict(cfg["backbone_kwargs"])
    if cfg["backbone"] == "mlp":
        bkw["seq_len"] = int(cfg["seq_len"])
        if "hidden" in bkw:
            bkw["hidden"] = tuple(bkw["hidden"])
    bkw["input_size"] = int(cfg["input_size"])
    norm = cfg.get("input_norm", "none")
    if norm not in INPUT_NORMS:
        raise ValueError(f"build_public_model: input_norm={norm!r}; accepted: {INPUT_NORMS}")
    if norm == "window" and (cfg["head"] != "gaussian"
                             or cfg["head_kwargs"].get("mean_activation", "softplus") != "identity"):
        # a positive head mean would, after the map back, keep every prediction above its window's mean
        raise ValueError("build_public_model: input_norm='window' needs head='gaussian' with head_kwargs "
                         "mean_activation='identity' (the head predicts standardised deviations from the window's "
                         f"mean); got head={cfg['head']!r}, head_kwargs={cfg['head_kwargs']}")
    try:
        backbone = _BACKBONES[cfg["backbone"]](**bkw)
        hkw = dict(cfg["head_kwargs"])
        if "log_std_bounds" in hkw:
            hkw["log_std_bounds"] = tuple(hkw["log_std_bounds"])
        head = _HEADS[cfg["head"]](backbone.feature_dim, int(cfg["horizon"]), **hkw)
    except TypeError as exc:
        raise ValueError(f"build_public_model: bad constructor arguments in config: {exc}") from None
    return PublicModel(backbone, head, cfg)


def save_public_model(path: str | os.PathLike[str], model: PublicModel) -> None:
    """Save ``model.config`` (as a JSON string) and ``model.state_dict()`` with ``torch.save``."""
    if not model.config:
        raise ValueError("save_public_model: model has no config; build it with build_public_model")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"format": FILE_FORMAT, "version": FILE_VERSION, "config": json.dumps(model.config),
                "state_dict": state}, path)


def load_public_model(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> PublicModel:
    """Load a model written by :func:`save_public_model` (returned in eval mode).

    Uses ``torch.load(weights_only=True)``: only tensors and plain containers
    are unpickled; a file holding any other pickled object raises
    :class:`ValueError` without running its code.  Every other unusable file
    (not a torch file, truncated, another format, settings and weights that do
    not fit together) raises :class:`ValueError` with a one-line reason too.
    """
    name = repr(os.fspath(path))
    try:
        blob = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"load_public_model: refusing {name}: it holds pickled objects other than "
                         f"tensors and plain containers (torch.load with weights_only=True failed); "
                         f"files written by save_public_model never do") from None
    except Exception as exc:  # noqa: BLE001 - torch reports a damaged file as any of a dozen exception types
        raise ValueError(f"load_public_model: {name} cannot be read as a torch file, it is truncated, damaged or "
                         f"of another kind ({_first_line(exc)})") from None
    if not isinstance(blob, dict) or blob.get("format") != FILE_FORMAT:
        raise ValueError(f"load_public_model: {name} is not an {FILE_FORMAT} file")
    if blob.get("version") != FILE_VERSION:
        raise ValueError(f"load_public_model: unsupported file version {blob.get('version')!r}; "
                         f"this code reads version {FILE_VERSION}")
    try:
        config = json.loads(blob["config"])
        model = build_public_model(config)
        model.load_state_dict(blob["state_dict"], strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"load_public_model: {name} is a damaged {FILE_FORMAT} file: its settings and weights do "
                         f"not fit together ({_first_line(exc)})") from None
    return model.eval()


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
