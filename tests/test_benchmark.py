"""``eqpm benchmark``: equal budgets, tuning and checkpoints on validation, one evaluation code for every method."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import trainers.benchmark as bench
from trainers.baselines import METHODS
from trainers.benchmark import Setting, make_plan
from trainers.cli import main
from trainers.evaluation import agent_regrets
from trainers.metrics import equity_metrics

REQUIRED = ["population", "layout", "method", "seed", "positions", "decisions", "grad_steps", "wall_s", "variance",
            "mean", "worst", "mse"]
METHOD_NAMES = ["reinforce_weighted", "PPO util", "SPO+"]  # ours, an SB3 policy, a decision-focused loss
BUDGET = 4000


@pytest.mark.slow
def test_quick_benchmark_tables_budgets_and_one_evaluation_code(tmp_path, monkeypatch, capsys) -> None:
    calls: list[tuple[str, str, np.ndarray, float]] = []

    def spy(model, pop, protocol="per-step"):
        regrets, mse = agent_regrets(model, pop, protocol)
        calls.append((type(model).__name__, pop.split, regrets, mse))
        return regrets, mse

    monkeypatch.setattr(bench, "agent_regrets", spy)
    out = tmp_path / "bench"
    argv = ["benchmark", "--population", "phone", "--quick", "--methods", *METHOD_NAMES, "--budget", str(BUDGET),
            "--backend", "sequential", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    runs = pd.read_csv(out / "baselines_runs.csv", keep_default_na=False, na_values=[""])
    assert set(REQUIRED) <= set(runs.columns)
    assert sorted(runs["method"]) == sorted(METHOD_NAMES) and set(runs["seed"]) == {0}
    assert set(runs["population"]) == {"phone"} and set(runs["layout"]) == {"shared"}
    header = next(line for line in printed.splitlines() if line.startswith("| method |"))
    for col in ("variance", "mean regret", "worst agent", "MSE", "positions", "agent-decisions", "grad steps",
                "train wall (s)"):
        assert col in header

    # equal budgets: every run stops at its last whole update unit within the budget
    setting = Setting("phone")
    pop = setting.split_population("train")
    for r in runs.itertuples():
        unit = METHODS[r.method].decisions_per_unit(pop, _hp(r.hp))
        assert BUDGET - unit < r.decisions <= BUDGET
        assert r.positions * METHODS[r.method].decisions_per_position(pop) == r.decisions
        assert r.grad_steps >= 1 and r.wall_s > 0

    # tuning: two grid points per method on the tuning seed, one chosen, never evaluated on the test split
    grid = pd.read_csv(out / "baselines_grid.csv")
    assert grid.groupby("method").size().to_dict() == {m: 2 for m in METHOD_NAMES}
    assert grid.groupby("method")["chosen"].sum().to_dict() == {m: 1 for m in METHOD_NAMES}
    chosen = grid[grid["chosen"]].set_index("method")
    assert all(runs.set_index("method").loc[m, "hp"] == chosen.loc[m, "hp"] for m in METHOD_NAMES)
    curves = pd.read_csv(out / "baselines_curves.csv")
    tune, ev = curves[curves["role"] == "tune"], curves[curves["role"] == "eval"]
    assert tune["test_variance"].isna().all() and ev["test_variance"].notna().all()
    for r in grid.itertuples():  # a grid point's score is its best checkpoint's validation criterion
        pts = tune[(tune["method"] == r.method) & (tune["hp_id"] == r.hp_id)]
        assert math.isclose(r.val_criterion, pts["val_criterion"].min())

    # one evaluation code: every held-out number went through trainers.evaluation.agent_regrets ...
    test_calls = [c for c in calls if c[1] == "test"]
    assert len(test_calls) == len(ev)
    assert {c[0] for c in test_calls} == {"PublicModel", "PolicyPredictor"}
    recorded = {round(equity_metrics(c[2])["variance"], 12) for c in test_calls}
    assert {round(v, 12) for v in ev["test_variance"]} <= recorded
    # ... and re-scoring each run's chosen checkpoint, loaded from disk, gives its row
    test_pop = setting.split_population("test")
    for r in runs.itertuples():
        run = out / "runs" / r.run_id
        model = METHODS[r.method].load_predictor(next(run.glob("best.*")), setting)
        regrets, mse = agent_regrets(model, test_pop)
        m = equity_metrics(regrets, test_pop.agent_names, mse)
        for k in ("variance", "mean", "worst", "mse"):
            assert math.isclose(m[k], getattr(r, k), rel_tol=1e-6, abs_tol=1e-9), (r.method, k)
    ei = pd.read_csv(out / "baselines_runs_equal_inputs.csv")
    assert (ei["ckpt_positions"] <= ei["inputs_budget"]).all() and set(REQUIRED) <= set(ei.columns)
    assert (out / "baselines_curves_phone-shared.png").stat().st_size > 0

    # resumable: nothing is trained again, the tables are rebuilt from the run directories
    n = len(calls)
    assert main(argv) == 0
    assert len(calls) == n
    again = pd.read_csv(out / "baselines_runs.csv", keep_default_na=False, na_values=[""])
    pd.testing.assert_frame_equal(again, runs)


def _hp(text: str) -> dict[str, float]:
    return {k: float(v) for k, v in (part.split(" ") for part in text.split(", "))}


@pytest.mark.parametrize("args, message", [
    (["--population", "phone", "--methods", "PPO"], "unknown method 'PPO'"),
    (["--population", "dc-similar-same-lambda", "--methods", "SPO+"], "does not apply"),
    (["--population", "phone", "--seeds", "0", "--tune-seed", "0"], "separate seed"),
    (["--population", "phone", "--budget", "10"], "accepted: a larger --budget"),
    ([], "no population given"),
])
def test_bad_benchmark_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, message) -> None:
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as exc:
        main(["benchmark", *args, "--quick", "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("eqpm: error:")
    assert not out.exists()


def test_checkpoints_and_the_equal_inputs_point() -> None:
    plan = make_plan([Setting("ev-similar")], ["PFYL", "PPO util"], budget=700_000, checkpoints=4, seeds=[0, 1])
    setting = plan.settings[0]
    M = setting.split_population("train").num_agents
    # P*: the positions PFYL (10 solves per agent and position) reaches within the budget
    assert plan.inputs_budget(setting) == 700_000 // (10 * M)
    ppo = plan.targets(setting, "PPO util")
    assert ppo == sorted({175_000, 350_000, 525_000, 700_000, (700_000 // (10 * M)) * M})
    g = next(g for g in plan.groups() if g.method == "PPO util")
    assert [j.seed for j in g.tune_jobs()] == [plan.tune_seed] * 6 and len({j.run_id for j in g.tune_jobs()}) == 6
    records = [{"curve": [{"val": {"criterion": c}}], "best": 0} for c in (3.0, 1.0, 2.0, 1.0)]
    assert g.choose(records) == 1  # the lowest validation score; ties go to the first
    assert [j.hp for j in g.eval_jobs(1)] == [g.grid[1]] * 2 and [j.seed for j in g.eval_jobs(1)] == [0, 1]


@pytest.mark.parametrize("layout", ["shared", "chunked"])
def test_every_method_has_a_grid_of_the_same_size(layout: str) -> None:
    setting = Setting("ev-similar", layout)
    steps = setting.split_population("train").num_steps  # chunked: one agent's stretch (74 positions)
    sizes = {n: (len(m.grid(setting, False)), len(m.grid(setting, True))) for n, m in METHODS.items()}
    assert set(sizes.values()) == {(6, 2)}, sizes
    for name in ("eq_ppo", "SPO+"):
        batches = sorted({hp["batch_size"] for hp in METHODS[name].grid(setting, False)})
        assert len(batches) == 2 and batches[-1] == min(128, steps)


PEAK_AVOIDER = '''
import torch
from agents.base import AgentGroup


class PeakAvoider(AgentGroup):
    """Runs a one-hour job of `kw` kW in the slot with the lowest predicted price."""

    kind = "peak_avoider"

    def __init__(self, n=3, horizon=12):
        super().__init__(n, horizon)
        self.kw = torch.arange(1, n + 1, dtype=torch.float64)

    def context(self, index):
        return {"kw": self.kw.unsqueeze(1).expand(-1, len(index))}

    def decide(self, pred, ctx):
        M, B = ctx["kw"].shape
        p = pred.detach().double().expand(M, B, self.horizon)
        return torch.nn.functional.one_hot(p.argmin(-1), self.horizon).double()

    def cost(self, decision, truth, ctx):
        return ctx["kw"] * (decision * self._broadcast(truth).double()).sum(-1)
'''


def test_benchmark_on_a_population_file_with_a_custom_agent(tmp_path) -> None:
    (tmp_path / "avoider.py").write_text(PEAK_AVOIDER)
    (tmp_path / "pop.toml").write_text('name = "avoiders"\nhorizon = 12\n\n[signal]\nregion = "CISO"\nname = "price"\n\n'
                                       '[[groups]]\nclass = "avoider.py:PeakAvoider"\nargs = { n = 4 }\n')
    out = tmp_path / "bench"
    assert main(["benchmark", "--population-file", str(tmp_path / "pop.toml"), "--quick", "--methods", "mse",
                 "A2C util", "--budget", "600", "--backend", "sequential", "--out", str(out)]) == 0
    runs = pd.read_csv(out / "baselines_runs.csv")
    assert sorted(runs["method"]) == ["A2C util", "mse"] and set(runs["population"]) == {"avoiders"}
    from eq_envs.population_file import load_population_file
    plan = make_plan([Setting(load_population_file(tmp_path / "pop.toml"))], None, quick=True)
    (label, skipped), = plan.skipped.items()
    assert set(skipped) == {"pathwise", "SPO+", "PFYL"} and "peak_avoider" in skipped["SPO+"]


def test_reach_table_finds_the_first_checkpoint_at_the_reference_variance() -> None:
    from trainers.benchmark_report import reach

    runs = pd.DataFrame([
        {"population": "p", "layout": "shared", "method": "PPO util", "seed": s, "variance": v, "wall_s": w,
         "grad_steps": 100} for s, v, w in ((0, 2.0, 100.0), (1, 4.0, 300.0))] + [
        {"population": "p", "layout": "shared", "method": "ours", "seed": s, "variance": 1.0, "wall_s": 40.0,
         "grad_steps": 400} for s in (0, 1)])
    curve = {0: (5.0, 3.5, 2.9, 1.0), 1: (5.0, 4.0, 3.5, 3.2)}  # seed 1 never reaches 3.0
    curves = pd.DataFrame(
        [{"population": "p", "layout": "shared", "method": "ours", "role": "eval", "seed": s, "checkpoint": k,
          "wall_s": 10.0 * k, "decisions": 1000 * k, "grad_steps": 100 * k, "test_variance": v}
         for s, vs in curve.items() for k, v in enumerate(vs)]
        + [{"population": "p", "layout": "shared", "method": "ours", "role": "tune", "seed": 100, "checkpoint": 0,
            "wall_s": 0.0, "decisions": 0, "grad_steps": 0, "test_variance": 0.0}])  # tuning rows have no say
    rc = reach(runs, curves).set_index(["method", "seed"])
    assert rc.loc[("ours", 0), "target_variance"] == 3.0 and rc.loc[("ours", 0), "ref_wall_s"] == 200.0
    assert rc.loc[("ours", 0), "reach_wall_s"] == 20.0 and rc.loc[("ours", 0), "reach_decisions"] == 2000
    assert rc.loc[("ours", 0), "wall_ratio"] == 0.1
    assert math.isnan(rc.loc[("ours", 1), "reach_wall_s"])
    assert rc.loc[("ours", 0), "s_per_step"] == 0.1 and rc.loc[("PPO util", 1), "s_per_step"] == 3.0
    assert set(rc["reference"]) == {"PPO util"}
    # a setting without PPO util measures against PPO through the window normalisation (the revin part)
    window = reach(runs.replace({"PPO util": "PPO util (window)"}), curves).set_index(["method", "seed"])
    assert set(window["reference"]) == {"PPO util (window)"} and window.loc[("ours", 0), "reach_wall_s"] == 20.0
