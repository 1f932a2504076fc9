"""Study grids: the paper's settings, skipping finished runs, Ray == sequential, reports from run directories."""
from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

from trainers import cli
from trainers.grid import collect, is_finished, run_dir, run_grid
from trainers.reports import check_claims, write_study_report
from trainers.studies import STUDY_NAMES, TABLE1_SETTINGS, RunSpec, study_specs


@pytest.mark.parametrize("name", STUDY_NAMES)
def test_every_study_builds_valid_unique_runs(name):
    specs = study_specs(name, seeds=[0, 1])
    assert len({s.run_id for s in specs}) == len(specs)
    for s in specs:
        cfg = s.train_config()  # validates
        assert cfg.seed == s.seed
        assert (cfg.objective == "mse") == (s.method == "Plain PM")
        if s.method == "Equitable PM":
            assert cfg.q == pytest.approx(s.q_plus_1 - 1.0)
            assert cfg.beta == s.beta
    # every setting has a Plain PM per seed to compare against
    for setting in {s.setting for s in specs if name != "estimators"}:
        assert {s.seed for s in specs if s.setting == setting and s.method == "Plain PM"} == {0, 1}


def test_table1_is_the_papers_grid():
    specs = study_specs("table1", seeds=[0])
    for label, population, exponents in TABLE1_SETTINGS:
        mine = [s for s in specs if s.setting == label]
        assert {s.config["population"] for s in mine} == {population}
        assert sorted(s.q_plus_1 for s in mine if s.method == "Equitable PM") == sorted(exponents)
        assert all(s.estimator == "pathwise" for s in mine if s.method == "Equitable PM")
    t4 = study_specs("table4", seeds=[0])
    assert sorted(s.beta for s in t4 if s.method == "Equitable PM") == [0.0, 0.2, 0.8]
    assert {s.q_plus_1 for s in t4 if s.method == "Equitable PM"} == {40.0}


def test_runs_shared_between_studies_have_one_id():
    t2 = {s.run_id for s in study_specs("table2", seeds=[0])}
    t4 = {s.run_id for s in study_specs("table4", seeds=[0])}
    # the Plain PM and beta = 0 of Table 4 are Table 2's "different agents" runs: trained once
    assert len(t2 & t4) == 2
    quick = {s.run_id for s in study_specs("table2", seeds=[0], quick=True)}
    assert not quick & t2  # quick runs never pass for full ones


def test_studies_run_in_the_papers_layout_and_name_the_variant_and_protocol():
    paper = study_specs("table3", seeds=[0])
    assert {s.config["layout"] for s in paper} == {"shared"} and {s.protocol for s in paper} == {"time"}
    assert {s.setting for s in paper} == {"Mixed agents"}  # the paper's setting name: the paper's layout
    chunked = study_specs("table3", seeds=[0], layout="chunked", protocol="random")
    assert {s.setting for s in chunked} == {"Mixed agents (chunked layout)"}
    assert {(s.config["layout"], s.config["protocol"], s.protocol) for s in chunked} == {("chunked", "random", "random")}
    assert not {s.run_id for s in paper} & {s.run_id for s in chunked}


def test_unknown_study_is_a_clear_error():
    with pytest.raises(ValueError, match="accepted: table1"):
        study_specs("table9")
    with pytest.raises(SystemExit) as e:
        cli.main(["reproduce", "table9", "--quick"])
    assert e.value.code == 2


def test_report_only_without_runs_is_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["reproduce", "phone", "--quick", "--report-only", "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "no finished runs" in err and "Traceback" not in err


def _tiny(seeds=(0,)) -> list[RunSpec]:
    """Two-epoch, one-batch versions of Table 1's first three runs per seed."""
    out = []
    for s in study_specs("table1", seeds=list(seeds), quick=True)[:3]:
        cfg = {**s.config, "epochs": 2, "max_batches": 1}
        out.append(dataclasses.replace(s, config=cfg))
    return out


def test_sequential_grid_skips_finished_runs_and_reports(tmp_path, monkeypatch):
    monkeypatch.setenv("EQPM_THREADS", "1")
    specs = _tiny()
    counts = run_grid(specs, tmp_path, backend="sequential", report=lambda m: None)
    assert counts == {"total": 3, "skipped": 0, "ran": 3}
    assert all(is_finished(tmp_path, s) for s in specs)
    again = run_grid(specs, tmp_path, backend="sequential", report=lambda m: None)
    assert again == {"total": 3, "skipped": 3, "ran": 0}
    # a changed setting is a different run, not a finished one
    changed = dataclasses.replace(specs[0], config={**specs[0].config, "lr": 0.01})
    assert not is_finished(tmp_path, changed)

    runs = collect(tmp_path, specs + [changed])
    assert len(runs) == 3 and runs.attrs["missing"] == [changed.run_id]
    for spec, row in zip(specs, runs.itertuples()):  # the tables' numbers, by hand from each run's agent regrets
        agent = pd.read_csv(run_dir(tmp_path, spec) / "agent_regret.csv", index_col="agent")
        assert agent.shape == (50, 2) and row.run_id == spec.run_id
        for prefix, column in (("", "per-step"), ("mf_", "mean-forecast")):
            c = agent[column].to_numpy()
            assert getattr(row, f"{prefix}variance") == pytest.approx(c.var(), rel=1e-12)
            assert getattr(row, f"{prefix}mean") == pytest.approx(c.mean(), rel=1e-12)
            assert getattr(row, f"{prefix}jain") == pytest.approx(c.sum() ** 2 / (len(c) * (c ** 2).sum()), rel=1e-12)
    rec = json.loads((run_dir(tmp_path, specs[0]) / "result.json").read_text())
    first = pd.read_csv(run_dir(tmp_path, specs[0]) / "agent_regret.csv", index_col="agent")
    assert rec["test"]["variance"] == pytest.approx(float(first["per-step"].var(ddof=0)))

    paths = write_study_report("table1", specs, tmp_path)
    for key in ("summary_md", "summary_csv", "claims", "distributions", "equity", "tradeoff"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0
    assert "Plain PM" in paths["summary_md"].read_text()
    claims = check_claims(runs.assign(study="table1"), "table1")
    assert {c["claim"] for c in claims} >= {"Equitable PM variance below Plain PM for every q+1"}


def test_ray_grid_matches_sequential(tmp_path, monkeypatch):
    import ray  # noqa: F401 - a dependency (setup.cfg): its absence is a failure, not a skip

    monkeypatch.setenv("EQPM_THREADS", "1")
    specs = _tiny()
    seq, ray_root = tmp_path / "seq", tmp_path / "ray"
    run_grid(specs[:2], seq, backend="sequential", report=lambda m: None)
    counts = run_grid(specs[:2], ray_root, backend="ray", num_cpus=2, report=lambda m: None)
    assert counts["ran"] == 2
    a, b = collect(seq, specs[:2]), collect(ray_root, specs[:2])
    pd.testing.assert_series_equal(a["variance"], b["variance"], rtol=1e-6)
    pd.testing.assert_series_equal(a["mse"], b["mse"], rtol=1e-6)
