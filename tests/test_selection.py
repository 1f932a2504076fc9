"""Validation during training: the selected model is the best validated epoch; patience; the accuracy guard; resume."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainers.config import ConfigError, TrainConfig
from trainers.evaluation import agent_regrets
from trainers.networks import load_public_model
from trainers.training import train

SMALL = {"backbone": "mlp", "backbone_kwargs": {"hidden": [16]}}
BASE = dict(population="ev-home-slots", estimator="reinforce_weighted", q=9.0, num_samples=2, baseline="loo",
            epochs=6, max_batches=2, batch_size=32, lr=3e-3, model=SMALL)


def _val_eq_norm(model, cfg: TrainConfig) -> float:
    """The criterion recomputed from scratch: (sum_m C_m^(q+1))^(1/(q+1)) of the per-agent validation regrets."""
    regrets, _ = agent_regrets(model, cfg.build_population("val"))
    p = cfg.q + 1
    return float(np.sum(np.asarray(regrets, dtype=np.float64) ** p) ** (1 / p))


def test_model_pt_is_the_best_validated_epoch(tmp_path) -> None:
    cfg = TrainConfig(**BASE)
    res = train(cfg, tmp_path, tensorboard=False)
    vals = [h["val_eq_norm"] for h in res.history]
    best = int(np.argmin(vals)) + 1
    assert res.selected_epoch == best
    assert res.history[-1]["selected_epoch"] == best
    saved = load_public_model(tmp_path / "model.pt")
    # the saved model scores the best epoch's value on validation, recomputed independently
    assert _val_eq_norm(saved, cfg) == pytest.approx(min(vals), rel=1e-9)
    for a, b in zip(saved.parameters(), res.model.parameters()):
        assert torch.equal(a, b)


def test_patience_stops_early_and_a_resumed_stopped_run_stays_stopped(tmp_path) -> None:
    cfg = TrainConfig(**{**BASE, "epochs": 40, "patience": 1, "lr": 0.05})
    res = train(cfg, tmp_path, tensorboard=False)
    assert res.stopped_early is not None and res.stopped_early < 40
    last = res.history[-1]
    assert last["epoch"] == res.stopped_early and last["selected_epoch"] == res.stopped_early - 1
    assert (tmp_path / "model.pt").exists()
    again = train(cfg, tmp_path, tensorboard=False)
    assert [h["epoch"] for h in again.history] == [h["epoch"] for h in res.history]
    for a, b in zip(again.model.parameters(), res.model.parameters()):
        assert torch.equal(a, b)


def test_resume_with_selection_is_bit_identical(tmp_path) -> None:
    cfg = TrainConfig(**{**BASE, "estimator": "eq_ppo", "baseline": None, "update": {"epochs": 2, "minibatches": 2}})
    full = train(cfg, tmp_path / "full", tensorboard=False)
    train(cfg, tmp_path / "part", stop_after_epoch=3, tensorboard=False)
    resumed = train(cfg, tmp_path / "part", tensorboard=False)
    assert resumed.selected_epoch == full.selected_epoch
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_accuracy_guard_admits_only_epochs_near_the_reference(tmp_path) -> None:
    plain = TrainConfig(**{**BASE, "objective": "mse", "estimator": "auto", "baseline": None, "q": 0.0,
                           "num_samples": 1, "epochs": 8})
    train(plain, tmp_path / "plain", tensorboard=False)
    ref_mse = agent_regrets(load_public_model(tmp_path / "plain" / "model.pt"), plain.build_population("val"))[1]
    cfg = TrainConfig(**{**BASE, "accuracy_guard": 0.5, "guard_reference": str(tmp_path / "plain" / "model.pt")})
    res = train(cfg, tmp_path / "eq", tensorboard=False)
    limit = ref_mse * 1.5
    for h in res.history:
        assert h["val_admissible"] == float(h["val_mse"] <= limit)
    admissible = [h for h in res.history if h["val_admissible"] == 1.0]
    if admissible:
        assert res.selected_epoch == min(admissible, key=lambda h: h["val_eq_norm"])["epoch"]
    else:  # nothing admissible: the last epoch's model, and no selected epoch
        assert res.selected_epoch is None and math.isnan(res.history[-1]["selected_epoch"])


def test_selection_settings_are_checked() -> None:
    for bad, msg in [({"selection": "best"}, "selection='best'"),
                     ({"val_fraction": 0.0, "selection": "worst"}, "needs a validation split"),
                     ({"patience": 0}, "patience=0"), ({"accuracy_guard": 0.05}, "needs guard_reference"),
                     ({"guard_reference": "x.pt"}, "applies with accuracy_guard only"),
                     ({"guard_metric": "mae"}, "guard_metric='mae'")]:
        with pytest.raises(ConfigError, match=msg):
            TrainConfig(**{**BASE, **bad})
    with pytest.raises(ConfigError, match="no such file"):
        train(TrainConfig(**{**BASE, "accuracy_guard": 0.05, "guard_reference": "/nonexistent/model.pt"}))
