"""Training loop: repeatable seeds, exact resume, config validation, CLI errors."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from eq_envs.presets import build_population
from trainers.cli import main
from trainers.config import ConfigError, TrainConfig
from trainers.evaluation import evaluate
from trainers.training import train

FAST = dict(population="dc-different-different-lambda", epochs=4, max_batches=1, batch_size=32)


def _params(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_same_seed_same_numbers() -> None:
    a = train(TrainConfig(q=2.0, seed=5, **FAST))
    b = train(TrainConfig(q=2.0, seed=5, **FAST))
    strip = lambda hist: [{k: v for k, v in h.items() if k != "seconds"} for h in hist]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    for x, y in zip(_params(a.model), _params(b.model)):
        assert torch.equal(x, y)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]


@pytest.mark.parametrize("objective,population", [("equitable", "dc-different-different-lambda"),
                                                  ("equitable", "ev-similar"), ("mse", "ev-similar")])
def test_interrupted_run_resumes_to_the_same_result(tmp_path, objective: str, population: str) -> None:
    q = {"q": 1.0} if objective == "equitable" else {}  # the Plain PM takes no q
    cfg = TrainConfig(**{**FAST, "population": population, "objective": objective, **q, "epochs": 5})
    full = train(cfg, tmp_path / "full", tensorboard=False)
    part = train(cfg, tmp_path / "part", stop_after_epoch=2, tensorboard=False)
    assert len(part.history) == 2 and not (tmp_path / "part" / "model.pt").exists()
    resumed = train(cfg, tmp_path / "part", tensorboard=False)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4, 5]
    for x, y in zip(_params(full.model), _params(resumed.model)):
        assert torch.equal(x, y)
    assert [h["loss"] for h in full.history] == [h["loss"] for h in resumed.history]
    assert (tmp_path / "part" / "model.pt").exists()
    rows = (tmp_path / "part" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 6  # header + 5 epochs


def test_resume_refuses_changed_settings(tmp_path) -> None:
    train(TrainConfig(q=1.0, **FAST), tmp_path, stop_after_epoch=1, tensorboard=False)
    with pytest.raises(ConfigError, match="different settings \\(q\\)"):
        train(TrainConfig(q=2.0, **FAST), tmp_path, tensorboard=False)


def test_config_validation_and_alias() -> None:
    assert TrainConfig.from_dict({"q_plus_1": 40}).q == 39.0
    for bad, msg in [({"q": -0.5}, "q must be finite and >= 0"), ({"beta": 1.5}, "beta must be in \\[0, 1\\]"),
                     ({"population": "ev-x"}, "population='ev-x' is not accepted"),
                     ({"region": "XXX"}, "region='XXX' is not accepted"), ({"epochs": 0}, "epochs=0"),
                     ({"bogus": 1}, "unknown setting\\(s\\) bogus")]:
        with pytest.raises(ConfigError, match=msg):
            TrainConfig.from_dict(bad)


def test_cli_bad_settings_exit_2_and_write_nothing(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    for argv in (["train", "--q", "-1", "--run-dir", str(run)], ["train", "--beta", "3", "--run-dir", str(run)],
                 ["train", "--config", str(tmp_path / "missing.json"), "--run-dir", str(run)],
                 ["evaluate", str(tmp_path / "missing.pt")]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("eqpm: error:")
    assert not run.exists()


def test_cli_train_then_evaluate(tmp_path, capsys) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"population": "dc-different-same-lambda", "epochs": 2, "max_batches": 1}))
    assert main(["train", "--config", str(cfg), "--q-plus-1", "3", "--run-dir", str(tmp_path / "r")]) == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["q"] == 2.0 and saved["population"] == "dc-different-same-lambda"
    assert main(["evaluate", str(tmp_path / "r" / "model.pt"), "--population", "dc-different-same-lambda",
                 "--out", str(tmp_path / "t.csv")]) == 0
    assert (tmp_path / "t.csv").exists() and (tmp_path / "t_agents.csv").exists()
    assert "variance" in capsys.readouterr().out


def _eq12_regret(w: np.ndarray, lam: np.ndarray, c_hat: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Data-center regret from Eq. 12 by hand: the capacity s = sqrt(lam w / c_hat) minimises (w + s) c_hat +
    lam w / s; it is scored under the true c against the best cost w c + 2 sqrt(lam w c)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.sqrt(lam * w / c_hat)
        r = (w + s) * c + lam * w / s - (w * c + 2 * np.sqrt(lam * w * c))
    return np.where(w > 0, r, 0.0)


def test_evaluate_table_matches_regrets_and_metrics_computed_by_hand() -> None:
    model = train(TrainConfig(**FAST)).model
    pop = build_population("dc-different-different-lambda", split="test")
    idx = torch.arange(pop.num_steps)
    with torch.no_grad():
        pred = model.mean(pop.observation(idx)).double()[..., 0].numpy()  # [N] shared, [M, N] chunked layout
    truth = pop.truth(idx)[..., 0].numpy()
    dc = pop.groups[0]
    ctx = dc.context(idx)
    w, lam = ctx["workload"].numpy(), ctx["lam"].numpy()  # [M, N]: every agent at every clock position
    floor = dc.min_prediction

    def per_agent(c_hat: np.ndarray) -> np.ndarray:
        c_hat, c = np.broadcast_to(c_hat, w.shape), np.broadcast_to(truth, w.shape)
        return _eq12_regret(w, lam, np.maximum(c_hat, floor), c).mean(1)

    forecast = np.broadcast_to(np.broadcast_to(pred, w.shape).mean(1, keepdims=True), w.shape)  # one per agent
    mse = float(((pred - truth) ** 2).mean())
    for protocol, c in (("per-step", per_agent(pred)), ("mean-forecast", per_agent(forecast))):
        row = evaluate({"m": model}, pop, protocol=protocol).iloc[0]
        p = c / c.sum()
        want = {"variance": c.var(), "mean": c.mean(), "worst": c.max(), "jain": c.sum() ** 2 / (len(c) * (c ** 2).sum()),
                "c95_c5": np.percentile(c, 95) - np.percentile(c, 5), "mse": mse,
                "entropy_ratio": -(p * np.log(p)).sum() / np.log(len(c))}
        for key, value in want.items():
            assert row[key] == pytest.approx(value, rel=1e-7, abs=1e-12), (protocol, key)
        assert row["worst_agent"] == pop.agent_names[int(np.argmax(c))]


def test_warm_start_copies_the_saved_model_and_checks_it(tmp_path) -> None:
    src = train(TrainConfig(population="dc-similar-same-lambda", objective="mse", epochs=2, max_batches=1, seed=3),
                tmp_path / "plain", tensorboard=False)
    path = str(tmp_path / "plain" / "model.pt")
    # one Adam step moves every weight by at most ~lr: a warm start stays within lr of the source, a cold one does not
    lr = 1e-4
    warm = train(TrainConfig(population="dc-similar-same-lambda", epochs=1, max_batches=1, seed=5, lr=lr,
                             init_from=path), None, tensorboard=False)
    cold = train(TrainConfig(population="dc-similar-same-lambda", epochs=1, max_batches=1, seed=5, lr=lr), None,
                 tensorboard=False)
    gap = lambda m: max(float((a - b).abs().max()) for a, b in zip(_params(m), _params(src.model)))  # noqa: E731
    assert gap(warm.model) <= 1.01 * lr
    assert gap(cold.model) > 100 * lr
    with pytest.raises(ConfigError, match="no such file"):
        train(TrainConfig(population="dc-similar-same-lambda", epochs=1, init_from=str(tmp_path / "nope.pt")), None)
    with pytest.raises(ConfigError, match="differs from this run's in"):  # an EV transformer cannot start from an LSTM
        train(TrainConfig(population="ev-similar", epochs=1, init_from=path), None)


def test_cli_layout_split_form_credit_flags_reach_the_run_and_evaluate_reads_them(tmp_path, capsys) -> None:
    flags = ["--population", "phone", "--epochs", "1", "--max-batches", "1", "--batch-size", "8"]
    assert main(["train", *flags, "--layout", "chunked", "--split-protocol", "random", "--split-seed", "2",
                 "--val-fraction", "0.2", "--credit", "linear", "--form", "power", "--run-dir", str(tmp_path / "a")]) == 0
    saved = json.loads((tmp_path / "a" / "config.json").read_text())
    assert {k: saved[k] for k in ("layout", "protocol", "split_seed", "val_fraction", "credit", "form")} == \
        {"layout": "chunked", "protocol": "random", "split_seed": 2, "val_fraction": 0.2, "credit": "linear",
         "form": "power"}
    capsys.readouterr()
    # evaluate takes the population and its split settings from the run's config.json beside model.pt
    assert main(["evaluate", str(tmp_path / "a" / "model.pt"), "--split", "val"]) == 0
    assert capsys.readouterr().out.startswith("phone, val split (random protocol), chunked layout:")
    # runs trained on different layouts: the flag chooses, without it one clear line
    assert main(["train", *flags, "--run-dir", str(tmp_path / "b")]) == 0
    models = [str(tmp_path / "a" / "model.pt"), str(tmp_path / "b" / "model.pt")]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", *models])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differ in layout, protocol, val_fraction, split_seed" in err[0]
    assert "pass --layout, --split-protocol, --val-fraction, --split-seed to choose" in err[0]
    assert main(["evaluate", *models, "--layout", "shared", "--split-protocol", "time", "--val-fraction", "0.15",
                 "--split-seed", "0"]) == 0
    assert "phone, test split (time protocol), shared layout:" in capsys.readouterr().out


def test_cli_compare_trains_and_scores_in_the_given_layout(tmp_path, capsys) -> None:
    assert main(["compare", "--population", "phone", "--layout", "chunked", "--q-values", "3", "--epochs", "1",
                 "--fine-tune-epochs", "1", "--max-batches", "1", "--batch-size", "8", "--seeds", "0",
                 "--out-dir", str(tmp_path)]) == 0
    configs = [json.loads(p.read_text()) for p in sorted((tmp_path / "runs").glob("*/*/config.json"))]
    assert len(configs) == 5 and {c["layout"] for c in configs} == {"chunked"}
    # the Utilitarian (q+1 = 1) and Equitable PMs are fine-tuned from the Plain PM's model.pt, and trained from scratch
    plain = next(p for p in (tmp_path / "runs").glob("*/plain-*"))
    assert sorted(str(c["init_from"]) for c in configs if c["objective"] == "equitable") == \
        sorted(["None", "None", str(plain / "model.pt"), str(plain / "model.pt")])
    out = capsys.readouterr().out
    assert "chunked layout, time split" in out
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert list(summary["method"]) == ["Plain PM", "Utilitarian PM", "Equitable PM"]


def test_cli_compare_main_job_defaults(tmp_path, capsys) -> None:
    # the README's first command: EV home slots on ERCOT, a window-normalised public model for every method
    assert main(["compare", "--q-values", "5", "--epochs", "1", "--fine-tune-epochs", "1", "--max-batches", "1",
                 "--seeds", "0", "--out-dir", str(tmp_path)]) == 0
    configs = [json.loads(p.read_text()) for p in sorted((tmp_path / "runs").glob("*/*/config.json"))]
    assert len(configs) == 5
    assert {(c["population"], c["region"], c["model"].get("input_norm")) for c in configs} == \
        {("ev-home-slots", "ERCO", "window")}
    assert "Equitable PM" in capsys.readouterr().out


def test_cli_compare_refuses_what_it_cannot_honour(tmp_path, capsys) -> None:
    for extra, words in ((["--q-plus-1", "3"], "--q-values"), (["--val-fraction", "0"], "validation"),
                         (["--init-from", "x.pt"], "its own Plain PM")):
        with pytest.raises(SystemExit) as exc:
            main(["compare", "--population", "phone", *extra, "--out-dir", str(tmp_path / "c")])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1
    assert not (tmp_path / "c").exists()


def test_metrics_log_the_epochs_learning_rate_and_comparable_raw_regrets() -> None:
    """Issue 10's reporting fixes: ``lr`` is the rate used in the epoch (before StepLR steps), and ``mean_regret``
    is the raw regret of the deterministic prediction for every objective (the mixed population weights its
    data centers 10x in the objective, not in the log)."""
    small = {"backbone": "mlp", "backbone_kwargs": {"hidden": [8]}}
    common = dict(population="mixed", epochs=3, max_batches=1, batch_size=16, step_size=1, lr_gamma=0.5,
                  val_fraction=0.0, model=small)
    plain = train(TrainConfig(objective="mse", lr=1e-3, **common))
    assert [h["lr"] for h in plain.history] == pytest.approx([1e-3, 5e-4, 2.5e-4])
    # at a vanishing learning rate both objectives see the same model: their logged regrets must agree
    tiny = dict(common, lr=1e-12, epochs=1)
    equitable = dict(objective="equitable", q_plus_1=3, num_samples=2, baseline="loo")
    rows = [train(TrainConfig(**settings, **tiny)).history[0] for settings in ({"objective": "mse"}, equitable)]
    assert rows[0]["mean_regret"] == pytest.approx(rows[1]["mean_regret"], rel=1e-6)
    assert rows[0]["max_agent_regret"] == pytest.approx(rows[1]["max_agent_regret"], rel=1e-6)
