"""Population files end to end: your own agent kind and data, through the CLI, recorded and reproducible."""
from __future__ import annotations

import hashlib
import json
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from agents.base import AgentGroup
from eq_envs.datasets import DataError
from eq_envs.datasets.ev import agents_from_sessions, load_acn_sessions, load_sessions, session_table
from eq_envs.datasets.grid import load_fuel_mix
from eq_envs.population_file import build_population_from_spec, load_population_file, normalize_spec
from eq_envs.presets import build_population
from trainers.cli import main
from trainers.config import ConfigError, TrainConfig

# A new agent kind, written the way a user would, in a file outside the package.
AGENT_FILE = '''
import pandas as pd
import torch
from agents.base import AgentGroup


class LoadShifter(AgentGroup):
    """Runs a job of `hours` hours in the predicted cheapest contiguous block of the window."""

    kind = "load_shifter"

    def __init__(self, jobs, horizon=12, split="train"):
        df = pd.read_csv(jobs)
        super().__init__(len(df), horizon, names=[f"job_{n}" for n in df["name"]])
        self.hours = [int(h) for h in df["hours"]]
        self.kw = torch.tensor(df["kw"].to_numpy(), dtype=torch.float64)

    def context(self, index):
        return {"kw": self.kw.unsqueeze(1).expand(-1, len(index))}

    def decide(self, pred, ctx):
        M, B = ctx["kw"].shape
        pred = pred.detach().double().expand(M, B, self.horizon)
        out = torch.zeros(M, B, self.horizon, dtype=torch.float64)
        for m, h in enumerate(self.hours):
            start = pred[m].unfold(-1, h, 1).sum(-1).argmin(-1)
            out[m].scatter_(-1, start.unsqueeze(-1) + torch.arange(h), 1.0)
        return out

    def cost(self, decision, truth, ctx):
        return ctx["kw"] * (decision * self._broadcast(truth).double()).sum(-1)
'''

POPULATION_FILE = '''
name = "shifters"
horizon = 12
layout = "chunked"

[signal]
region = "ERCO"
name = "price"

[[groups]]
class = "shifter.py:LoadShifter"
files = { jobs = "jobs.csv" }
weight = 2.0

[[groups]]
kind = "phone"
weight = 0.5
'''

SMALL = ["--epochs", "1", "--max-batches", "1", "--batch-size", "8"]


@pytest.fixture()
def user_dir(tmp_path):
    (tmp_path / "shifter.py").write_text(AGENT_FILE)
    (tmp_path / "jobs.csv").write_text("name,hours,kw\nwash,2,1.5\ndry,3,2.0\nheat,5,0.7\npump,1,3.0\n")
    (tmp_path / "pop.toml").write_text(POPULATION_FILE)
    return tmp_path


def test_new_agent_kind_trains_evaluates_and_compares_through_the_cli(user_dir, capsys) -> None:
    """The issue's 'done when': agent code and data outside the package, no edit to the project."""
    pop_file, run = user_dir / "pop.toml", user_dir / "runs" / "eq"
    assert main(["train", "--population-file", str(pop_file), "--q-plus-1", "3", *SMALL, "--run-dir", str(run)]) == 0
    assert (run / "model.pt").is_file()
    # the run records the population exactly: the file verbatim, the spec, a sha256 of every file it reads
    assert (run / "population.toml").read_text() == POPULATION_FILE
    record = json.loads((run / "population.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert config["population"] == record["spec"] and config["population"]["name"] == "shifters"
    for name in ("jobs.csv", "shifter.py"):
        f = str((user_dir / name).resolve())
        assert record["data_files"][f] == hashlib.sha256((user_dir / name).read_bytes()).hexdigest()

    capsys.readouterr()
    assert main(["evaluate", str(run / "model.pt"), "--population-file", str(pop_file)]) == 0
    table = capsys.readouterr().out
    assert "job_wash" in table or "variance" in table
    out = user_dir / "cmp"
    assert main(["compare", "--population-file", str(pop_file), *SMALL, "--fine-tune-epochs", "1", "--q-values", "3",
                 "--seeds", "0", "--out-dir", str(out)]) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["method"]) == ["Plain PM", "Utilitarian PM", "Equitable PM"]
    agents = pd.read_csv(next(out.glob("runs/shifters-spec/plain-*/agent_regret.csv")))
    assert list(agents["agent"][:4]) == ["job_wash", "job_dry", "job_heat", "job_pump"] and len(agents) == 4 + 18


def test_resume_with_a_changed_data_file_is_refused(user_dir, capsys) -> None:
    pop_file, run = user_dir / "pop.toml", user_dir / "runs" / "a"
    args = ["train", "--population-file", str(pop_file), "--max-batches", "1", "--batch-size", "8", "--run-dir",
            str(run)]
    assert main([*args, "--epochs", "1"]) == 0
    with (user_dir / "jobs.csv").open("a") as fh:
        fh.write("iron,1,1.0\n")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([*args, "--epochs", "2"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "jobs.csv" in err and "data file changed" in err


def test_population_spec_in_python_and_user_errors(user_dir) -> None:
    spec = load_population_file(user_dir / "pop.toml")
    assert normalize_spec(spec) == spec  # idempotent: a recorded spec compares equal on resume
    cfg = TrainConfig(population=spec, q_plus_1=3)
    assert cfg.q == 2.0 and json.loads(json.dumps(cfg.to_dict()))["population"] == spec
    pop = cfg.build_population("test")
    assert pop.num_agents == 22 and pop.weights == [2.0, 0.5] and pop.layout == "chunked"
    with pytest.raises(ConfigError, match="cannot be recorded"):
        TrainConfig(population=pop)
    with pytest.raises(ConfigError, match="region='ERCO' does not apply"):
        TrainConfig(population=spec, region="ERCO")
    bad = {**spec, "groups": [{"kind": "rocket"}]}
    with pytest.raises(ConfigError, match=r"groups\[0\].kind.*accepted: datacenter, ev, phone"):
        TrainConfig(population=bad)
    with pytest.raises(DataError, match="unknown key"):
        normalize_spec({**spec, "colour": "red"})
    missing = {**spec, "groups": [{"class": "shifter.py:LoadShifter", "files": {"jobs": "nope.csv"}}]}
    with pytest.raises(DataError, match="LoadShifter"):
        build_population_from_spec(normalize_spec(missing, base_dir=user_dir))


def test_missing_required_attribute_is_named(tmp_path) -> None:
    (tmp_path / "lp.py").write_text(textwrap.dedent('''
        import pulp
        from agents.pulp_backend import PulpAgentGroup

        class Forgetful(PulpAgentGroup):
            kind = "forgetful"
            def __init__(self, horizon=12):
                super().__init__(2, horizon)        # decision_size never set
            def context(self, index): ...
            def formulate(self, signal, ctx): ...
            def cost(self, decision, truth, ctx): ...
        '''))
    spec = {"name": "x", "horizon": 12, "signal": {"region": "CISO"},
            "groups": [{"class": str(tmp_path / "lp.py") + ":Forgetful"}]}
    with pytest.raises(DataError, match="attribute 'decision_size' is not set"):
        build_population_from_spec(spec)


def test_chunked_layout_and_wasserstein_for_a_kind_without_hooks() -> None:
    """No kind-specific code in populations: a kind with no context sequence gets equal stretches of time."""
    from eq_envs.population import Population, wasserstein_ranges

    class Flat(AgentGroup):
        kind = "flat"

        def context(self, index):
            return {}

        def decide(self, pred, ctx):
            return pred.expand(self.num_agents, -1, -1)[..., 0]

        def cost(self, decision, truth, ctx):
            return (decision - self._broadcast(truth)[..., 0]) ** 2

    base = build_population("phone", layout="shared")
    shared = Population("flat", base.signal, "train", base.split_range, [Flat(3, 12)], horizon=12)
    pop = Population("flat", base.signal, "train", base.split_range, [Flat(3, 12)], horizon=12, layout="chunked")
    assert pop.num_steps == shared.num_steps // 3
    assert pop.time_step([0]).reshape(-1).tolist() == [12 + base.split_range[0] + n * pop.num_steps for n in range(3)]
    assert wasserstein_ranges(pop) == {}


def test_fuel_mix_with_an_unnamed_index_column(tmp_path) -> None:
    mix = load_fuel_mix("MISO")
    mix.index.name = None
    mix.to_csv(tmp_path / "own.csv")
    assert (tmp_path / "own.csv").read_text().startswith(",WND,")
    own = load_fuel_mix("MISO", tmp_path / "own.csv")
    pd.testing.assert_frame_equal(own, mix, check_names=False, check_freq=False)
    assert any("first header cell is empty" in m for m in own.attrs["report"])


def test_sessions_from_any_table_match_the_acn_loader() -> None:
    """The generic column-mapped loader reproduces the dedicated ACN loader on the same file (independent code)."""
    t = session_table("acn-caltech")
    generic = load_sessions(t.pop("file"), t.pop("columns"), **t)
    acn = load_acn_sessions()
    assert len(generic) == len(acn) == 9660
    np.testing.assert_array_equal(generic["energy_kwh"].to_numpy(), acn["energy_kwh"].to_numpy())
    np.testing.assert_allclose(generic["duration_h"].to_numpy(), acn["duration_h"].to_numpy())


def test_norway_sessions_one_agent_per_vehicle(tmp_path) -> None:
    t = session_table("norway-residential")
    s = load_sessions(t.pop("file"), t.pop("columns"), **t)
    assert s.attrs["dropped"]["missing or unparsable End_plugout"] == 34  # no plug-out: dropped, counted
    assert ((s["duration_h"] >= 3) & (s["duration_h"] <= 12)).all()
    train_names, train_needs, _ = agents_from_sessions(s, "per_vehicle", "train")
    test_names, test_needs, _ = agents_from_sessions(s, "per_vehicle", "test")
    assert train_names == test_names and len(train_names) == s.groupby("vehicle").size().ge(2).sum()
    # each vehicle's own sessions, the earlier ones for training
    v = s[s["vehicle"] == train_names[0].removeprefix("ev_")].sort_values("start", kind="mergesort")
    both = np.concatenate([train_needs[0], test_needs[0]])
    np.testing.assert_array_equal(both, v["energy_kwh"].to_numpy())
    # the duration filter is a setting; power x duration gives the energy
    longer = load_sessions(s.attrs["file"], {"start": "Start_plugin", "end": "End_plugout", "energy": "El_kWh"},
                           sep=";", decimal=",", time_format="%d.%m.%Y %H:%M", min_hours=3, max_hours=24)
    assert len(longer) > len(s)
    (tmp_path / "pd.csv").write_text("car,t0,hours,kw\na,2024-01-01 18:00,4,3.5\na,2024-01-02 19:00,5,2\n"
                                     "b,2024-01-01 20:00,10,1.1\nb,2024-01-03 20:00,2,7\n")
    own = load_sessions(tmp_path / "pd.csv", {"start": "t0", "duration": "hours", "power": "kw", "vehicle": "car"})
    np.testing.assert_allclose(own["energy_kwh"], [14.0, 11.0, 10.0])  # sorted by start; b's 2 h session dropped
    assert own.attrs["dropped"]["duration < 3 h"] == 1
    with pytest.raises(DataError, match="exactly one of energy or power"):
        load_sessions(tmp_path / "pd.csv", {"start": "t0", "duration": "hours", "vehicle": "car"})


def test_spec_with_own_signal_csv_and_norway_evs(tmp_path) -> None:
    rng = np.random.default_rng(0)
    hours = pd.date_range("2024-01-01", periods=2000, freq="h", tz="UTC")
    values = 5 + np.sin(np.arange(2000) * 2 * np.pi / 24) + 0.1 * rng.standard_normal(2000)
    pd.DataFrame({"time": hours, "price": values}).to_csv(tmp_path / "sig.csv", index=False)
    spec = normalize_spec({"name": "own", "horizon": 12, "preset": "physical",
                           "signal": {"csv": "sig.csv", "column": "price", "timestamp": "time"},
                           "groups": [{"kind": "ev", "sessions": "norway-residential", "max_hours": 24}]},
                          base_dir=tmp_path)
    pop = build_population_from_spec(spec, "train")
    np.testing.assert_allclose(pop.signal, values)
    # the 70 % train part less its validation tail (15 %); validation and test follow in time order
    assert pop.split_range == (0, 1190) and pop.groups[0].names[0].startswith("ev_")
    assert build_population_from_spec(spec, "val").split_range == (1190, 1400)
    assert build_population_from_spec(spec, "test").split_range == (1400, 2000)
    r = pop.regret(torch.full((1, 12, 12), 5.0, dtype=torch.float64), torch.arange(12))
    assert r.shape == (pop.num_agents, 12) and (r >= -1e-9).all()


@pytest.mark.slow
def test_reproduce_grid_on_a_population_file(user_dir, capsys) -> None:
    out = user_dir / "rep"
    assert main(["reproduce", "--population-file", str(user_dir / "pop.toml"), "--quick", "--q-values", "2",
                 "--backend", "sequential", "--out", str(out)]) == 0
    per_run = pd.read_csv(out / "population-shifters" / "per_run.csv")
    assert set(per_run["setting"]) == {"shifters"} and set(per_run["protocol"]) == {"time", "random"}
    for _, g in per_run.groupby("protocol"):  # the Plain PM; the Utilitarian PM and q+1 = 2, fine-tuned and scratch
        assert sorted(g["q_plus_1"].fillna(0)) == [0.0, 1.0, 1.0, 2.0, 2.0]
    with pytest.raises(SystemExit):
        main(["reproduce", "table1", "--population-file", str(user_dir / "pop.toml")])
    assert "give no study names" in capsys.readouterr().err
