"""Linear memory at many agents: the O(M) leave-one-out credit, agent shards, the shared-prediction ranking.

Oracles: the O(M²) difference credit as it was before issue 14 (its algorithm
kept here, written with torch's own primitives), brute-force leave-one-out sums,
stable sorts, the per-agent sort path of the slot agents, and the unsharded
evaluation, and training itself (every registered update rule, unsharded
against one agent per shard).
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.base import DEFAULT_MEMORY_BUDGET, agent_shards, check_memory_budget
from agents.ev_charging import EVChargingAgent
from agents.slot_scheduling import prefix_ranks
from eq_envs.population import Population
from eq_envs.presets import build_population
from trainers import cli
from trainers.config import ConfigError, TrainConfig, default_model
from trainers.estimators import difference_credit, estimate
from trainers.networks import build_public_model
from trainers.objectives import _logsumexp, _masked_log, logsumexp_excluding_each
from trainers.studies import study_specs
from trainers.training import population_regret_fn, train
from trainers.updates import RULES

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- the O(M) leave-one-out credit
def quadratic_difference_credit(mean_regret, regret, baseline, q, form):
    """The O(M²) algorithm before issue 14: leave-one-out sums over a ``[K, M, M]`` masked copy of ``z``.

    Written with torch's own ``logsumexp``/``log`` instead of the library's masked helpers.
    """
    p, B = q + 1.0, regret.shape[-1]
    if q == 0:
        return (regret - baseline) / B
    c_new = torch.clamp(mean_regret.unsqueeze(-1) - (regret - baseline) / B, min=0)  # C̄ with C_{m,i} -> b_{m,i}
    if form == "power":
        return mean_regret.unsqueeze(-1) ** p - c_new ** p
    z = p * torch.log(mean_regret)  # -inf for zero regrets
    M = z.shape[-1]
    z_excl = z.unsqueeze(-2).repeat_interleave(M, dim=-2)
    z_excl[..., torch.arange(M), torch.arange(M)] = -math.inf
    log_n = torch.logsumexp(z, dim=-1)[..., None, None] / p
    log_new = torch.logaddexp(torch.logsumexp(z_excl, dim=-1).unsqueeze(-1), p * torch.log(c_new)) / p
    return torch.where(torch.isfinite(log_n), -torch.exp(log_n) * torch.expm1(log_new - log_n), -torch.exp(log_new))


def _credit_cases(dtype):
    """(name, mean_regret, regret, baseline): random and adversarial inputs."""
    g = torch.Generator().manual_seed(0)
    cases = []
    for t in range(40):  # random: per-agent scales over 1e-7..1e7, some agents at zero regret
        K, M, B = 2, 1 + t % 23, 1 + t % 6
        scale = torch.exp(torch.randn(1, M, 1, generator=g, dtype=torch.float64) * 4)
        regret = torch.rand(K, M, B, generator=g, dtype=torch.float64) * scale
        if t % 3 == 0:
            regret[:, : M // 3] = 0
        base = torch.rand(K, M, B, generator=g, dtype=torch.float64) * scale
        cases.append((f"random{t}", regret, base))
    r = torch.tensor([[[1e6], [1.0], [2.0], [0.5]]], dtype=torch.float64)  # one agent dominates;
    cases.append(("dominant, its term vanishes", r, torch.zeros_like(r)))  # B = 1, b = 0: its C̄' = 0
    r = torch.tensor([[[3.0, 1.0], [3.0, 5.0], [0.1, 0.2]]], dtype=torch.float64)
    cases.append(("tie at the maximum", r, torch.full_like(r, 0.5)))
    r = torch.zeros(2, 5, 3, dtype=torch.float64)
    cases.append(("all zero", r, torch.rand(2, 5, 3, generator=g, dtype=torch.float64)))
    r = torch.tensor([[[0.0, 0.0], [4.0, 2.0], [0.0, 0.0]]], dtype=torch.float64)
    cases.append(("one non-zero agent", r, torch.zeros_like(r)))
    r = torch.tensor([[[2.0, 7.0, 1.0]]], dtype=torch.float64)
    cases.append(("one agent", r, torch.ones_like(r)))
    r = torch.tensor([[[1e-30, 3e-30], [1e30, 2e30]]], dtype=torch.float64)
    cases.append(("sixty decades apart", r, r.flip(-1)))
    return [(n, r.mean(-1).to(dtype), r.to(dtype), b.to(dtype)) for n, r, b in cases]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("form", ["norm", "power"])
def test_linear_difference_credit_matches_quadratic_oracle(dtype, form):
    eps = torch.finfo(dtype).eps
    for name, cbar, regret, base in _credit_cases(dtype):
        for q in (0.0, 1.0, 4.0, 19.0, 99.0):
            got = difference_credit(cbar, regret, base, q, form)
            want = quadratic_difference_credit(cbar, regret, base, q, form)
            assert got.shape == want.shape and got.dtype == dtype
            assert torch.equal(torch.isfinite(got), torch.isfinite(want)), (name, q)
            if form == "power":  # unchanged code path: identical
                assert torch.equal(got[torch.isfinite(got)], want[torch.isfinite(want)]), (name, q)
                continue
            # both are rounded versions of N - N'; their error is a few eps of N = ||C̄||_{q+1}
            n = torch.exp(_logsumexp((q + 1) * _masked_log(cbar.double())) / (q + 1)).nan_to_num(0.0)
            err = (got.double() - want.double()).abs().amax(dim=(1, 2))
            assert (err <= 64 * eps * n).all(), (name, q, (err / (eps * n)).tolist())


def _brute_loo(z: torch.Tensor) -> torch.Tensor:
    """``log Σ_{j≠m} exp(z_j)`` with torch.logsumexp on each row with entry m removed (float64)."""
    z = z.double()
    M = z.shape[-1]
    out = torch.empty_like(z)
    for m in range(M):
        rest = torch.cat([z[..., :m], z[..., m + 1:]], dim=-1)
        out[..., m] = torch.logsumexp(rest, dim=-1) if M > 1 else -math.inf
    return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_logsumexp_excluding_each(dtype):
    eps = torch.finfo(dtype).eps
    g = torch.Generator().manual_seed(3)
    rows = [torch.randn(3, 17, generator=g, dtype=torch.float64) * s for s in (0.1, 10.0, 300.0)]
    rows += [torch.tensor([[1000.0, 0.0, -5.0]]),  # the largest term dominates: L - z_max rounds to 0
             torch.tensor([[2.0, 2.0, -1.0]]),  # tie at the maximum
             torch.tensor([[-math.inf, 3.0, -math.inf]]),  # leaving out the only finite term
             torch.tensor([[-math.inf, -math.inf]]),  # all zero terms
             torch.tensor([[7.0]])]  # a single term
    for z in rows:
        z = z.to(dtype)
        got, want = logsumexp_excluding_each(z), _brute_loo(z)
        assert torch.equal(torch.isinf(got), torch.isinf(want)), z
        fin = torch.isfinite(want)
        tol = 8 * eps * (1 + z.double().abs().amax(dim=-1, keepdim=True).nan_to_num(0, 0, 0))
        assert ((got.double() - want).abs()[fin] <= tol.expand_as(want)[fin]).all(), (z, got, want)
    # the dominated leave-one-out sum is exact to a few ulps of itself, not of the full sum
    got = logsumexp_excluding_each(torch.tensor([1000.0, 0.0, -5.0], dtype=torch.float64))
    assert abs(float(got[0]) - math.log1p(math.exp(-5.0))) <= 4e-16


def test_difference_credit_memory_is_linear_in_agents():
    """40,000 agents: the [K, M, M] form would need 6.4 GB; the credit must stay within ~100 MB."""
    code = textwrap.dedent("""
        import resource, torch
        from trainers.estimators import difference_credit
        M = 40_000
        g = torch.Generator().manual_seed(0)
        regret = torch.rand(1, M, 2, generator=g)
        base = torch.rand(1, M, 2, generator=g)
        cbar = regret.mean(-1)
        difference_credit(cbar, regret, base, 0.0, "norm")  # warm the allocator and the kernels
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = difference_credit(cbar, regret, base, 19.0, "norm")
        assert torch.isfinite(out).all()
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
    """)
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert int(res.stdout.split()[-1]) < 100 * 2**20


# --------------------------------------------------------------------------- agent shards
def _random_pred(pop: Population, B: int, seed: int, shared: bool) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, pop.num_steps, (B,), generator=g)
    # integer-valued predictions from -1 to 11: ties and negative slots are common
    pred = (torch.rand(1 if shared else pop.num_agents, B, pop.horizon, generator=g, dtype=torch.float64) * 12 - 1)
    return pred.floor(), idx


@pytest.mark.parametrize("layout", ["shared", "chunked"])
@pytest.mark.parametrize("name", ["ev-similar", "dc-different-different-lambda", "mixed"])
def test_sharded_evaluation_gives_the_same_numbers(name, layout):
    pop = build_population(name, layout=layout)
    for shared in (False, True):
        pred, idx = _random_pred(pop, 24, 1, shared)
        full = pop.evaluate(pred, idx, memory_budget=2**40)
        for budget in (1, 30_000, None):  # one agent per shard, a few agents per shard, the default
            ev = pop.evaluate(pred, idx, memory_budget=budget)
            for f in ("regret", "cost", "oracle_cost", "clamped"):
                assert torch.equal(getattr(ev, f), getattr(full, f)), (f, budget)
            assert all(torch.equal(a, b) for a, b in zip(ev.decisions, full.decisions))
            assert torch.equal(pop.regret(pred, idx, memory_budget=budget), full.regret)
            assert torch.equal(pop.regret(pred, idx, memory_budget=budget).mean(dim=1), full.regret.mean(dim=1))


def test_agent_shards_follow_the_budget():
    assert agent_shards(10, 100, 350) == [slice(0, 3), slice(3, 6), slice(6, 9), slice(9, 10)]
    assert agent_shards(10, 100, 1) == [slice(m, m + 1) for m in range(10)]
    assert agent_shards(10, 100, 10**9) == [slice(0, 10)]
    for bad in (0, -5, 1.5, True, "1GB"):
        with pytest.raises(ValueError, match="memory_budget"):
            check_memory_budget(bad)
    pop = build_population("ev-similar", layout="shared")
    with pytest.raises(ValueError, match="population ev-similar: memory_budget=0"):
        Population(pop.name, pop.signal, pop.split, pop.split_range, pop.groups, pop.horizon, memory_budget=0)
    with pytest.raises(ValueError, match="memory_budget"):
        pop.regret(torch.zeros(1, 2, 12), [0, 1], memory_budget=-1)


@pytest.mark.parametrize("name,estimator,layout", [
    ("ev-similar", "reinforce_weighted", "shared"), ("ev-similar", "reinforce_weighted", "chunked"),
    ("dc-different-different-lambda", "pathwise", "shared"), ("mixed", "reinforce_paper", "chunked")])
def test_estimate_is_unchanged_by_sharding(name, estimator, layout):
    """Same regrets, per-agent means, loss and gradient (bit for bit) with one agent per shard."""
    results = []
    for budget in (2**40, 1):
        pop = build_population(name, layout=layout)
        pop.memory_budget = budget
        torch.manual_seed(0)
        model = build_public_model(default_model(name))
        idx = torch.arange(16) * (pop.num_steps // 16)
        out = estimate(model, pop.observation(idx), population_regret_fn(pop, idx), q=19.0, estimator=estimator,
                       num_agents=pop.num_agents, num_samples=2, generator=torch.Generator().manual_seed(1))
        out.surrogate.backward()
        results.append((out, [p.grad for p in model.parameters() if p.grad is not None]))
    (a, ga), (b, gb) = results
    assert torch.equal(a.regret, b.regret) and torch.equal(a.mean_regret, b.mean_regret)
    assert a.loss == b.loss and torch.equal(a.surrogate, b.surrogate)
    assert len(ga) == len(gb) > 0 and all(torch.equal(x, y) for x, y in zip(ga, gb))


# --------------------------------------------------------------------------- one ranking of a shared prediction
def test_prefix_ranks_are_stable_sort_ranks_of_every_prefix():
    g = torch.Generator().manual_seed(5)
    pred = torch.randint(0, 4, (50, 7), generator=g).double()  # many ties
    table = prefix_ranks(pred)
    assert table.shape == (50, 7, 8)
    for b in range(50):
        for a in range(1, 8):
            order = np.argsort(pred[b, :a].numpy(), kind="stable")
            ranks = np.empty(a, dtype=np.int64)
            ranks[order] = np.arange(a)
            assert table[b, :a, a].tolist() == ranks.tolist()


@pytest.mark.parametrize("windows", [False, True])
def test_shared_prediction_ranked_once_matches_per_agent_sort(windows):
    """decide() on a [1, B, T] prediction (one ranking) equals decide() on it copied per agent (M sorts)."""
    rng = np.random.default_rng(0)
    M, B, T = 40, 30, 12
    needs = [rng.uniform(0, 45, size=9) for _ in range(M)]
    rates = [rng.uniform(3, 7, size=9) for _ in range(M)]
    wins = [rng.uniform(1, 14, size=5) for _ in range(M)] if windows else None
    agent = EVChargingAgent(needs, rates, horizon=T, windows=wins)
    idx = torch.arange(B)
    ctx = agent.context(idx)
    pred = torch.from_numpy(rng.integers(-2, 5, size=(1, B, T)).astype(np.float64))  # ties and negatives
    shared = agent.decide(pred, ctx)
    per_agent = agent.decide(pred.expand(M, B, T).clone(), ctx)
    assert shared.shape == (M, B, T) and torch.equal(shared, per_agent)
    truth = torch.from_numpy(rng.uniform(-1, 10, size=(B, T)))
    # the oracle decides on the shared truth: evaluate() equals scoring against the truth copied per agent
    assert torch.equal(agent.regret(pred, truth, idx), agent.regret(pred, truth.expand(M, B, T).clone(), idx))


# --------------------------------------------------------------------------- every update rule, through train()
def _rule_config(rule: str, **kw) -> TrainConfig:
    """A short run of ``rule`` (the Plain PM's rule is ``objective="mse"``), validated on a small split."""
    base = {"epochs": 1, "max_batches": 2, "batch_size": 16, "val_fraction": 0.1, "seed": 3, **kw}
    if rule == "mse":
        return TrainConfig(population="ev-similar", objective="mse", **base)
    population = "dc-different-different-lambda" if RULES[rule].differentiable else "ev-similar"
    return TrainConfig(population=population, estimator=rule, q=3.0, num_samples=2, **base)


def _strip(history: list[dict]) -> list[dict]:
    """The logged numbers without the wall time; NaN (e.g. the Plain PM's eq_loss) as None, to compare equal."""
    return [{k: None if v != v else v for k, v in h.items() if k != "seconds"} for h in history]


@pytest.mark.parametrize("rule,extra", [(r, {}) for r in sorted(RULES)]
                         + [("reinforce_weighted", {"credit": "linear"}), ("eq_ppo", {"baseline": "deterministic"})])
def test_every_update_rule_trains_to_the_same_numbers_at_any_budget(rule, extra):
    """One agent per shard (a one-byte budget) and no sharding train bit-identical models and logs."""
    runs = [train(_rule_config(rule, memory_budget_mib=mib, **extra), None, tensorboard=False)
            for mib in (2.0**20, 2.0**-20)]
    (a, b), pop = runs, _rule_config(rule, memory_budget_mib=2.0**-20, **extra).build_population()
    assert pop.memory_budget == 1 and len(agent_shards(pop.num_agents, 1, pop.memory_budget)) == pop.num_agents
    assert _strip(a.history) == _strip(b.history) and "val_eq_norm" in a.history[-1]
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))


def test_a_run_resumes_with_another_memory_budget(tmp_path):
    full = train(_rule_config("reinforce_weighted", epochs=2), None, tensorboard=False)
    train(_rule_config("reinforce_weighted", epochs=2), tmp_path, stop_after_epoch=1, tensorboard=False)
    resumed = train(_rule_config("reinforce_weighted", epochs=2, memory_budget_mib=0.5), tmp_path, tensorboard=False)
    assert _strip(resumed.history) == _strip(full.history)
    assert json.loads((tmp_path / "config.json").read_text())["memory_budget_mib"] == 0.5


def test_memory_budget_setting_defaults_to_the_library_budget_and_leaves_study_run_ids_alone():
    cfg = TrainConfig(population="ev-similar")
    assert cfg.memory_budget_mib is None and cfg.build_population().memory_budget == DEFAULT_MEMORY_BUDGET
    assert TrainConfig(population="ev-similar", memory_budget_mib=0.5).build_population().memory_budget == 2**19
    # a setting that changes no number must not change the run ids (and so the finished runs) of the studies
    assert all("memory_budget_mib" not in s.config for s in study_specs("table2", seeds=[0]))


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), True, "32"])
def test_memory_budget_setting_is_checked(value):
    with pytest.raises(ConfigError, match=f"memory_budget_mib={value!r} is not accepted"):
        TrainConfig(memory_budget_mib=value)


def test_cli_memory_budget_flag(tmp_path, capsys):
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "--memory-budget-mib", "0", "--run-dir", str(run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "memory_budget_mib=0.0 is not accepted" in err[0]
    assert not run.exists()
    assert cli.main(["train", "--population", "ev-similar", "--epochs", "1", "--max-batches", "1", "--batch-size",
                     "8", "--val-fraction", "0", "--memory-budget-mib", "0.25", "--run-dir", str(run)]) == 0
    assert json.loads((run / "config.json").read_text())["memory_budget_mib"] == 0.25
