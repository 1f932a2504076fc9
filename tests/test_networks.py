"""Public-model networks: shapes, positivity, save/load, safe loading, seeding."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from trainers.networks import (
    WINDOW_HEAD,
    GaussianHead,
    LogNormalHead,
    MLPBackbone,
    PublicModel,
    build_public_model,
    load_public_model,
    save_public_model,
)

BACKBONES = {
    "lstm": {"hidden_size": 50},
    "transformer": {"d_model": 20, "nhead": 5},
    "mlp": {"hidden": [16]},
}


def _config(backbone: str, head: str = "gaussian", input_size: int = 1, horizon: int = 3, **head_kwargs) -> dict:
    return {"backbone": backbone, "backbone_kwargs": BACKBONES[backbone], "head": head, "head_kwargs": head_kwargs,
            "seq_len": 12, "input_size": input_size, "horizon": horizon}


@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("head", ["gaussian", "lognormal"])
@pytest.mark.parametrize("input_size", [1, 3])
def test_shapes(backbone, head, input_size):
    torch.manual_seed(0)
    model = build_public_model(_config(backbone, head, input_size, state_dependent_scale=(input_size == 3)))
    B = 5
    x = torch.rand(B, 12) * 10 if input_size == 1 else torch.rand(B, 12, input_size) * 10
    dist = model.distribution(x)
    assert tuple(dist.batch_shape) == (B,) and tuple(dist.event_shape) == (3,)
    assert model.mean(x).shape == (B, 3) and model.mode(x).shape == (B, 3)
    y = model.sample(x, 4)
    assert y.shape == (4, B, 3) and not y.requires_grad
    assert model.log_prob(x, y).shape == (4, B)
    assert model.log_prob(x, y[0]).shape == (B,)
    assert model.sample(x, 2, rsample=True).requires_grad
    if head == "lognormal":
        assert (y > 0).all()


@pytest.mark.parametrize("head_cls", [GaussianHead, LogNormalHead])
def test_mean_positive_and_scale_bounded(head_cls):
    head = head_cls(4, 2, mean_floor=1e-3)
    feats = torch.randn(7, 4)
    with torch.no_grad():
        head.mean_layer.bias.fill_(-200.0)
        head.raw_log_std.fill_(-1e4)
    dist = head(feats)
    mean = dist.mean
    assert (mean >= 1e-3 * (1 - 1e-5)).all() and (mean > 0).all()
    lo, hi = head.log_std_bounds
    base = dist.base_dist
    s = base.scale
    assert (s >= torch.exp(torch.tensor(lo)) * (1 - 1e-6)).all()
    with torch.no_grad():
        head.raw_log_std.fill_(1e4)
    assert (head(feats).base_dist.scale <= torch.exp(torch.tensor(hi)) * (1 + 1e-6)).all()
    # zero floor still gives a positive mean for moderate inputs
    head0 = head_cls(4, 2, mean_floor=0.0)
    assert (head0(feats).mean > 0).all()


def test_gaussian_mean_is_mode_lognormal_mean_matches_head():
    torch.manual_seed(0)
    x = torch.rand(6, 12) * 10
    g = build_public_model(_config("mlp", "gaussian", init_mean=5.0))
    torch.testing.assert_close(g.mean(x), g.mode(x))
    torch.testing.assert_close(g.mean(x), torch.full((6, 3), 5.0), atol=0.5, rtol=0)
    ln = build_public_model(_config("mlp", "lognormal", init_mean=5.0, init_std=0.3))
    mean, _ = ln.head.mean_and_log_std(ln.backbone(x))
    torch.testing.assert_close(ln.mean(x), mean)
    assert (ln.mode(x) < ln.mean(x)).all()
    samples = ln.sample(x, 20000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(samples.mean(0), mean.detach(), rtol=0.02, atol=0)


def test_transformer_uses_time_axis():
    """Each input's prediction depends on its own sequence only, and on the order of its steps."""
    torch.manual_seed(0)
    model = build_public_model(_config("transformer"))
    x = torch.rand(8, 12) * 10
    perm = torch.randperm(8)
    torch.testing.assert_close(model.mean(x)[perm], model.mean(x[perm]))
    torch.testing.assert_close(model.mean(x[:1]), model.mean(x)[:1])
    assert not torch.allclose(model.mean(x), model.mean(x.flip(1)))


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_save_load_round_trip(tmp_path: Path, backbone):
    torch.manual_seed(0)
    model = build_public_model(_config(backbone, "gaussian", state_dependent_scale=True, init_mean=4.0))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.eval()
    path = tmp_path / "model.pt"
    save_public_model(path, model)
    loaded = load_public_model(path)
    assert loaded.config == model.config
    x = torch.rand(5, 12) * 10
    y = model.sample(x, 3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(loaded.mean(x), model.mean(x))
    assert torch.equal(loaded.log_prob(x, y), model.log_prob(x, y))
    assert torch.equal(loaded.sample(x, 3, generator=torch.Generator().manual_seed(1)), y)


def _side_effect(path: str) -> str:
    Path(path).write_text("code ran")
    return path


class _Evil:
    """Unpickling this object would run ``_side_effect``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (_side_effect, (self.path,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_load_refuses_pickled_objects(tmp_path: Path):
    model = build_public_model(_config("mlp"))
    marker = tmp_path / "marker.txt"
    blob = {"format": "eqpm-public-model", "version": 1, "config": "{}", "state_dict": model.state_dict(),
            "extra": _Evil(str(marker))}
    path = tmp_path / "evil.pt"
    torch.save(blob, path)
    with pytest.raises(ValueError, match="refusing"):
        load_public_model(path)
    assert not marker.exists()
    # a plain pickle (not a torch zip file) of an object is refused too
    plain = tmp_path / "plain.pt"
    with open(plain, "wb") as fh:
        pickle.dump(_Evil(str(marker)), fh)
    with pytest.raises(ValueError, match="refusing"):
        load_public_model(plain)
    assert not marker.exists()
    # a well-formed torch file that is not ours
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.ones(2)}, other)
    with pytest.raises(ValueError, match="not an"):
        load_public_model(other)


def test_same_seed_same_samples():
    x = torch.rand(4, 12) * 10
    torch.manual_seed(3)
    m1 = build_public_model(_config("lstm"))
    torch.manual_seed(3)
    m2 = build_public_model(_config("lstm"))
    torch.manual_seed(7)
    a = m1.sample(x, 5)
    torch.manual_seed(7)
    b = m2.sample(x, 5)
    assert torch.equal(a, b)
    ga = m1.sample(x, 5, generator=torch.Generator().manual_seed(11))
    gb = m1.sample(x, 5, generator=torch.Generator().manual_seed(11))
    assert torch.equal(ga, gb)
    assert not torch.equal(ga, m1.sample(x, 5, generator=torch.Generator().manual_seed(12)))


def test_config_validation():
    with pytest.raises(ValueError, match="unknown config keys"):
        build_public_model({"backbone": "lstm", "lr": 0.05})
    with pytest.raises(ValueError, match="backbone"):
        build_public_model({"backbone": "gru"})
    with pytest.raises(ValueError, match="head"):
        build_public_model({"head": "beta"})
    with pytest.raises(ValueError, match="constructor"):
        build_public_model({"backbone": "lstm", "backbone_kwargs": {"hidden": 3}})
    with pytest.raises(ValueError, match="divisible"):
        build_public_model({"backbone": "transformer", "backbone_kwargs": {"d_model": 250, "nhead": 4}})
    with pytest.raises(ValueError, match="JSON"):
        build_public_model({"head_kwargs": {"init_mean": torch.tensor(1.0)}})
    default = build_public_model()
    assert default.config["backbone"] == "lstm" and default.backbone.feature_dim == 50
    paper_ev = build_public_model({"backbone": "transformer", "backbone_kwargs": {"d_model": 250, "nhead": 5},
                                   "horizon": 12})
    assert paper_ev.backbone.feature_dim == 250 and paper_ev.horizon == 12
    with pytest.raises(ValueError, match="input"):
        MLPBackbone(seq_len=12)(torch.rand(2, 11))
    with pytest.raises(ValueError, match="no config"):
        save_public_model("unused.pt", PublicModel(MLPBackbone(), GaussianHead(128)))


# ----------------------------------------------------------- window normalisation (RevIN)
def _window_model(backbone: str = "transformer") -> PublicModel:
    torch.manual_seed(0)
    return build_public_model({**_config(backbone, "gaussian", horizon=4, **WINDOW_HEAD), "input_norm": "window"})


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_window_norm_is_affine_equivariant(backbone):
    """The reason for input_norm="window": a season that shifts and stretches the signal shifts and stretches the
    prediction the same way, so the order of the predicted hours -- what a ranking agent decides on -- is kept."""
    model = _window_model(backbone)
    x = torch.rand(6, 12) * 3 + 2
    a, b = 2.5, 4.0
    d, d2 = model.distribution(x), model.distribution(a * x + b)
    torch.testing.assert_close(d2.mean, a * d.mean + b, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(d2.base_dist.scale, a * d.base_dist.scale, rtol=1e-4, atol=1e-5)
    assert torch.equal(d2.mean.argsort(dim=-1), d.mean.argsort(dim=-1))
    # an untrained model predicts the window's mean with half its spread as scale (WINDOW_HEAD)
    s = x.std(dim=1, unbiased=False, keepdim=True)
    torch.testing.assert_close(d.mean, x.mean(dim=1, keepdim=True).expand(-1, 4), atol=0.05 * s.max().item(), rtol=0)
    torch.testing.assert_close(d.base_dist.scale, 0.5 * s.expand(-1, 4), rtol=1e-4, atol=1e-6)


def test_window_norm_per_agent_inputs_and_save_load(tmp_path):
    model = _window_model()
    x = torch.rand(3, 5, 12) * 4 + 1  # [M, B, L]: the chunked layout's per-agent inputs
    per_agent = model.distribution(x).mean
    assert per_agent.shape == (3, 5, 4)
    torch.testing.assert_close(per_agent[1], model.distribution(x[1]).mean)
    save_public_model(tmp_path / "m.pt", model)
    torch.testing.assert_close(load_public_model(tmp_path / "m.pt").distribution(x).mean, per_agent)


@pytest.mark.parametrize("config, message", [
    ({"input_norm": "batch"}, "input_norm='batch'; accepted"),
    ({"input_norm": "window"}, "needs head='gaussian' with head_kwargs mean_activation='identity'"),
    ({"input_norm": "window", "head": "lognormal", "head_kwargs": WINDOW_HEAD}, "needs head='gaussian'"),
    ({"head_kwargs": {"mean_activation": "tanh"}}, "mean_activation='tanh'; accepted"),
    ({"head": "lognormal", "head_kwargs": {"mean_activation": "identity"}}, "mean_activation='identity'; accepted"),
])
def test_window_norm_refuses_what_cannot_work(config, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        build_public_model(config)


def test_train_config_gives_a_window_model_its_head():
    from trainers.config import TrainConfig
    cfg = TrainConfig(population="ev-home-slots", model={"input_norm": "window"})
    assert cfg.model_config["head_kwargs"] == WINDOW_HEAD
    assert build_public_model(cfg.model_config).input_norm == "window"
