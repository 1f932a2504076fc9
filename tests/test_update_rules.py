"""Update rules: the refactor keeps the estimators' gradients; eq_ppo's clipped objective; the divergence guard."""
from __future__ import annotations

import gzip
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from agents.base import AgentGroup
from eq_envs.presets import build_population
from trainers.config import ConfigError, TrainConfig
from trainers.errors import DivergenceError
from trainers.estimators import estimate, make_regret_fn
from trainers.rollout import collect_rollout
from trainers.training import train
from trainers.updates import RULES, NonFiniteError, apply_gradients, make_update_rule
from trainers.updates.eq_ppo import clipped_surrogate

DATA = Path(__file__).parent / "data"


def _fixture_module():
    spec = importlib.util.spec_from_file_location("make_estimator_fixture", DATA / "make_estimator_fixture.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cases() -> list[dict]:
    with gzip.open(DATA / "estimator_gradients.json.gz", "rt") as fh:
        return json.load(fh)


def _group_regret_fn(groups: list[AgentGroup], weights: list[float], truth: torch.Tensor, index: torch.Tensor):
    """The population's (weighted) regret at stored clock positions and truths, group by group."""
    fns, offset = [], 0
    for g, w in zip(groups, weights):
        t = truth if truth.dim() == 2 else truth[offset: offset + g.num_agents]
        fns.append((offset, g.num_agents, make_regret_fn(g, t, index), w))
        offset += g.num_agents

    def regret_fn(pred: torch.Tensor) -> torch.Tensor:
        parts = [fn(pred if pred.shape[0] == 1 else pred[o: o + n]) * w for o, n, fn, w in fns]
        return torch.cat(parts)

    return regret_fn


def _flat_grad(model) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double()


@pytest.mark.parametrize("case", _cases(), ids=lambda c: f"{c['population']}-{c['layout']}-{c['estimator']}")
def test_rules_reproduce_the_estimators_gradients_before_the_refactor(case: dict) -> None:
    """Each single-step rule's update moves the parameters by exactly the gradient the old ``estimate`` gave."""
    mod = _fixture_module()
    pop = build_population(case["population"], split="train", layout=case["layout"], val_fraction=0.0)
    index = torch.tensor(case["index"])
    truth = torch.tensor(case["truth"], dtype=torch.float64)
    x = torch.tensor(case["x"], dtype=torch.float64).float()
    regret_fn = _group_regret_fn(pop.groups, pop.weights, truth, index)
    kw = dict(case["settings"])
    rule = make_update_rule(case["estimator"], q=kw.pop("q"), num_samples=kw.pop("num_samples", 1), **kw)

    torch.manual_seed(case["model_seed"])
    model = mod.model_for(pop)
    before = [p.detach().clone() for p in model.parameters()]
    rollout = collect_rollout(model, x, regret_fn, num_agents=pop.num_agents, num_samples=rule.rollout_samples,
                              y_true=truth.float(), generator=torch.Generator().manual_seed(case["generator_seed"]),
                              deterministic_regret=rule.wants_deterministic_regret)
    stats = rule.update(model, torch.optim.SGD(model.parameters(), lr=1.0), rollout)
    step = torch.cat([(b - p.detach()).reshape(-1) for b, p in zip(before, model.parameters())]).double()
    expected = torch.tensor(case["gradient"], dtype=torch.float64)
    scale = float(expected.abs().max())
    assert scale > 0
    # SGD with lr 1 moves by the gradient, in float32 parameters: compare at float32 resolution
    torch.testing.assert_close(step, expected, rtol=1e-4, atol=1e-5 * scale)
    assert stats.grad_steps == 1
    assert stats.loss == pytest.approx(case["loss"], rel=1e-9)
    assert stats.eq_loss == pytest.approx(case["eq_loss"], rel=1e-9)
    torch.testing.assert_close(rollout.regret.mean(dim=(0, 2)).double(),
                               torch.tensor(case["mean_regret"], dtype=torch.float64))


def test_estimate_still_gives_the_old_gradients_exactly() -> None:
    """``estimate()`` (now a rollout plus a rule's surrogate) returns the stored gradient bit for bit."""
    mod = _fixture_module()
    for case in _cases():
        pop = build_population(case["population"], split="train", layout=case["layout"], val_fraction=0.0)
        truth = torch.tensor(case["truth"], dtype=torch.float64)
        index = torch.tensor(case["index"])
        torch.manual_seed(case["model_seed"])
        model = mod.model_for(pop)
        e = estimate(model, torch.tensor(case["x"], dtype=torch.float64).float(),
                     _group_regret_fn(pop.groups, pop.weights, truth, index), estimator=case["estimator"],
                     num_agents=pop.num_agents, y_true=truth.float(),
                     generator=torch.Generator().manual_seed(case["generator_seed"]), **case["settings"])
        e.surrogate.backward()
        assert torch.equal(_flat_grad(model), torch.tensor(case["gradient"], dtype=torch.float64)), case["estimator"]


# --------------------------------------------------------------------------- eq_ppo
def _ev_batch(layout: str = "shared", B: int = 24):
    pop = build_population("ev-similar", split="train", layout=layout)
    index = torch.randperm(pop.num_steps, generator=torch.Generator().manual_seed(5))[:B]
    from trainers.training import population_regret_fn
    return pop, index, pop.observation(index), pop.truth(index).float(), population_regret_fn(pop, index)


def _small_model(horizon: int = 12):
    from trainers.networks import build_public_model
    return build_public_model({"backbone": "mlp", "backbone_kwargs": {"hidden": [16]}, "head": "gaussian",
                               "head_kwargs": {"init_mean": 5.0, "init_std": 0.5}, "seq_len": 12, "horizon": horizon})


@pytest.mark.parametrize("layout", ["shared", "chunked"])
def test_clipped_objective_gradient_is_reinforce_at_ratio_one(layout: str) -> None:
    """First step of eq_ppo (ratio 1, weights from this rollout, no normalisation) = weighted REINFORCE, linear credit."""
    pop, index, x, y, fn = _ev_batch(layout)
    q = 4.0
    torch.manual_seed(0)
    model = _small_model()
    ref = estimate(model, x, fn, q=q, estimator="reinforce_weighted", credit="linear", baseline="deterministic",
                   num_agents=pop.num_agents, generator=torch.Generator().manual_seed(9))
    ref.surrogate.backward()
    expected = _flat_grad(model)

    rule = make_update_rule("eq_ppo", q=q, num_samples=1, baseline="deterministic",
                            epochs=1, minibatches=1, weight_rate=1.0, normalize_advantage=False, max_grad_norm=None)
    before = [p.detach().clone() for p in model.parameters()]
    rollout = collect_rollout(model, x, fn, num_agents=pop.num_agents, num_samples=1,
                              generator=torch.Generator().manual_seed(9), deterministic_regret=True)
    stats = rule.update(model, torch.optim.SGD(model.parameters(), lr=1.0), rollout)
    step = torch.cat([(b - p.detach()).reshape(-1) for b, p in zip(before, model.parameters())]).double()
    assert stats.grad_steps == 1 and stats.extra["clip_fraction"] == 0.0
    torch.testing.assert_close(step, expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))


def test_clipped_surrogate_zeroes_the_gradient_only_where_the_clip_binds() -> None:
    """PPO's pessimistic bound for a cost: outside [1-ε, 1+ε] the gradient vanishes when moving on helps."""
    eps = 0.2
    # log-ratios: inside, above and below the clip range, for positive and negative cost-advantages
    log_r = torch.log(torch.tensor([1.0, 1.5, 0.5, 1.0, 1.5, 0.5], dtype=torch.float64)).reshape(1, 6, 1)
    adv = torch.tensor([1.0, 1.0, 1.0, -1.0, -1.0, -1.0], dtype=torch.float64).reshape(1, 6, 1)
    lp = log_r.clone().requires_grad_(True)
    loss, ratio = clipped_surrogate(lp, torch.zeros_like(lp), adv, eps)
    loss.backward()
    r = ratio.detach().reshape(-1)
    g = lp.grad.reshape(-1)
    # d/dlogp of r·A is r·A; the bound picks the larger (more pessimistic for a cost) term
    # A > 0 (sample costlier than baseline): at r = 0.5 the clipped 0.8·A is larger -> no gradient; at 1.5 r·A is kept
    # A < 0 (cheaper): at r = 1.5 the clipped 1.2·A is larger -> no gradient; at 0.5 r·A is kept
    expected = torch.tensor([r[0] * 1, r[1] * 1, 0.0, -r[3], 0.0, -r[5]], dtype=torch.float64)
    torch.testing.assert_close(g, expected)
    assert float(loss.detach()) == pytest.approx(1.0 + 1.5 + 0.8 - 1.0 - 1.2 - 0.5)


def test_eq_ppo_reuses_a_rollout_and_stops_on_kl() -> None:
    pop, index, x, y, fn = _ev_batch()
    torch.manual_seed(1)
    model = _small_model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    rule = make_update_rule("eq_ppo", q=19.0, num_samples=2, epochs=4, minibatches=3)
    ro = collect_rollout(model, x, fn, num_agents=pop.num_agents, num_samples=2, y_true=y,
                         generator=torch.Generator().manual_seed(2))
    stats = rule.update(model, opt, ro, generator=torch.Generator().manual_seed(3))
    assert stats.grad_steps == 12 and stats.extra["passes"] == 4
    assert ro.credit is not None and ro.credit.shape == ro.regret.shape
    # a tiny KL target stops the passes after the first step moves the policy
    rule = make_update_rule("eq_ppo", q=19.0, num_samples=2, epochs=4, minibatches=3, target_kl=1e-9)
    ro = collect_rollout(model, x, fn, num_agents=pop.num_agents, num_samples=2, generator=torch.Generator().manual_seed(2))
    stats = rule.update(model, opt, ro, generator=torch.Generator().manual_seed(3))
    assert stats.grad_steps == 1 and stats.extra["passes"] == 0


def test_eq_ppo_weights_come_from_running_means_before_the_rollout() -> None:
    """The first rollout is weighted by its own means, later ones by the running mean of the earlier rollouts."""
    pop, index, x, y, fn = _ev_batch()
    torch.manual_seed(1)
    model = _small_model()
    rule = make_update_rule("eq_ppo", q=9.0, num_samples=2, weight_rate=0.5)
    rolls = [collect_rollout(model, x, fn, num_agents=pop.num_agents, num_samples=2,
                             generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    means = [r.regret.mean(dim=(0, 2)).double() for r in rolls]
    w1 = rule.equitable_weights(rolls[0])
    w2 = rule.equitable_weights(rolls[1])
    from trainers.objectives import equitable_weights
    torch.testing.assert_close(w1, equitable_weights(means[0], 9.0))
    torch.testing.assert_close(w2, equitable_weights(means[0], 9.0))  # running mean before rollout 2 = rollout 1's
    torch.testing.assert_close(rule.running, 0.5 * means[0] + 0.5 * means[1])
    # the worst-served agent gets the largest weight
    assert int(w1.argmax()) == int(means[0].argmax())


def test_eq_ppo_training_resumes_bit_identically(tmp_path) -> None:
    cfg = TrainConfig(population="ev-similar", layout="shared", estimator="eq_ppo", q=9.0, num_samples=2, epochs=3,
                      max_batches=2, batch_size=16, update={"epochs": 2, "minibatches": 2}, scale="anneal",
                      scale_final=0.1, model={"backbone": "mlp", "backbone_kwargs": {"hidden": [16]}})
    full = train(cfg, tmp_path / "full", tensorboard=False)
    train(cfg, tmp_path / "part", stop_after_epoch=1, tensorboard=False)
    resumed = train(cfg, tmp_path / "part", tensorboard=False)
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert strip(full.history) == strip(resumed.history)
    last = full.history[-1]
    assert last["grad_steps"] == 3 * 2 * 2 * 2  # epochs x batches x passes x minibatches
    assert last["decisions"] == 3 * 2 * 16 * 70 * 2 and last["positions"] == 3 * 2 * 16
    assert last["policy_std"] == pytest.approx(0.1, rel=1e-5)  # annealed to scale_final at the last batch


# --------------------------------------------------------------------------- divergence guard
def test_divergence_guard_stops_power_form_at_q_100_without_a_bad_checkpoint(tmp_path) -> None:
    cfg = TrainConfig.from_dict(
        {"population": "dc-different-different-lambda", "estimator": "reinforce_paper", "form": "power",
         "q_plus_1": 100, "epochs": 3, "max_batches": 2, "batch_size": 32, "lr": 0.05})
    with pytest.raises(DivergenceError) as err:
        train(cfg, tmp_path, tensorboard=False)
    msg = str(err.value)
    assert "\n" not in msg and "epoch 1" in msg and "form='norm'" in msg and "learning rate" in msg
    assert not (tmp_path / "model.pt").exists()
    assert not (tmp_path / "checkpoint.pt").exists()


def test_divergence_guard_keeps_the_last_good_checkpoint(tmp_path) -> None:
    """A run that goes non-finite after a good epoch stops there; its checkpoint is finite and loads."""
    base = {"population": "dc-different-different-lambda", "q_plus_1": 3, "epochs": 2, "max_batches": 2,
            "batch_size": 32}
    train(TrainConfig.from_dict({**base, "epochs": 1}), tmp_path, tensorboard=False)
    # resume the same run (epochs may grow) with a poisoned regret: the guard must fire in epoch 2
    import trainers.training as tr
    real = tr.population_regret_fn

    def poisoned(pop, index, weighted=True):
        fn = real(pop, index, weighted)
        return lambda pred: fn(pred) * math.nan

    tr.population_regret_fn = poisoned
    try:
        with pytest.raises(DivergenceError, match="epoch 2, batch 1/2: non-finite loss.*epoch 1\\) is kept"):
            train(TrainConfig.from_dict(base), tmp_path, tensorboard=False)
    finally:
        tr.population_regret_fn = real
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ck["epoch"] == 1 and all(torch.isfinite(v).all() for v in ck["model"].values())


def test_apply_gradients_refuses_non_finite_gradients_before_stepping() -> None:
    p = torch.nn.Parameter(torch.tensor([1.0, 0.0, 4.0]))
    opt = torch.optim.SGD([p], lr=1.0)
    with pytest.raises(NonFiniteError, match="gradient"):
        apply_gradients(opt, p.sqrt().sum(), [p])  # finite loss, infinite slope at 0
    assert torch.equal(p.detach(), torch.tensor([1.0, 0.0, 4.0]))  # untouched
    with pytest.raises(NonFiniteError, match="loss"):
        apply_gradients(opt, p.sum() * math.nan, [p])


# --------------------------------------------------------------------------- configuration
def test_rule_settings_are_validated_before_training() -> None:
    assert set(RULES) == {"mse", "pathwise", "reinforce_paper", "reinforce_paper_combined", "reinforce_weighted",
                          "eq_ppo"}
    for bad, msg in [({"estimator": "eq_ppo", "update": {"epochz": 2}}, "unknown setting\\(s\\) epochz"),
                     ({"estimator": "eq_ppo", "update": {"clip_range": 0}}, "clip_range=0"),
                     ({"estimator": "eq_ppo", "update": {"weight_rate": 1.5}}, "weight_rate"),
                     ({"estimator": "pathwise", "baseline": "loo"}, "does not apply to update rule 'pathwise'"),
                     ({"estimator": "eq_ppo", "credit": "linear"}, "credit='linear' does not apply"),
                     ({"update": {"epochs": 2}}, "do not apply with estimator='auto'"),
                     ({"objective": "mse", "estimator": "eq_ppo", "update": {"epochs": 2}}, "objective='mse'"),
                     ({"scale": "anneal"}, "scale_final=None"), ({"scale_final": 0.1}, "applies to scale='anneal'")]:
        with pytest.raises(ConfigError, match=msg):
            TrainConfig.from_dict({"population": "ev-similar", **bad})


# --------------------------------------------------------------------------- docs
def test_the_docs_example_rule_trains_as_written(tmp_path) -> None:
    """docs/trainer.md's "Adding an update rule" example, saved as a module, trains through the CLI and resumes."""
    import re
    import subprocess
    import sys

    text = (Path(__file__).parents[1] / "docs" / "trainer.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "class SignReinforce" in b)
    (tmp_path / "sign_reinforce.py").write_text(block)
    script = f"""
import sys
sys.path.insert(0, {str(tmp_path)!r})
import sign_reinforce  # noqa: F401  (registers the rule, as the import line in trainers/updates/__init__.py would)
from trainers.cli import main
args = ["train", "--population", "ev-home-slots", "--estimator", "sign_reinforce", "--q-plus-1", "5",
        "--update", "scale=0.5", "--epochs", "2", "--max-batches", "1", "--batch-size", "16",
        "--run-dir", {str(tmp_path / 'run')!r}]
assert main(args) == 0
assert main(args[:-2] + ["--epochs", "3", "--run-dir", {str(tmp_path / 'run')!r}]) == 0   # resumes
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                         cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    rows = (tmp_path / "run" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 4 and (tmp_path / "run" / "model.pt").exists()
    assert json.loads((tmp_path / "run" / "config.json").read_text())["update"] == {"scale": 0.5}
