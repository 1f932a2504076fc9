"""Study grids: the paper's settings, skipping finished runs, Ray == sequential, reports from run directories."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest

from trainers import cli
from trainers.grid import collect, is_finished, run_dir, run_grid
from trainers.model_selection import DEFAULT_ACCURACY_GUARD, DEFAULT_WARM_START_ONLY, select_seed, target_claims
from trainers.reports import check_claims, write_combined, write_study_report
from trainers.studies import (
    FINE_TUNE_EPOCHS,
    FINE_TUNE_LR_FACTOR,
    RANKING_EPOCHS,
    STUDY_NAMES,
    TABLE1_SETTINGS,
    TRADEOFF_EXPONENTS,
    RunSpec,
    compare_specs,
    init_path,
    study_specs,
)


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
    assert sorted(s.beta for s in t4 if s.method == "Equitable PM" and s.paper_grid) == [0.0, 0.2, 0.8]
    assert {s.q_plus_1 for s in t4 if s.method == "Equitable PM" and s.paper_grid} == {40.0}


def test_runs_shared_between_studies_have_one_id():
    t2 = {s.run_id for s in study_specs("table2", seeds=[0])}
    t4 = {s.run_id for s in study_specs("table4", seeds=[0])}
    # the Plain PM, the Utilitarian PM and beta = 0 of Table 4 (fine-tuned and from scratch) are Table 2's
    # "different agents" runs: trained once
    assert len(t2 & t4) == 5
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


def test_regions_replace_a_studys_grid_data_and_keep_its_run_ids():
    default = study_specs("tradeoffs", seeds=[0])
    assert {s.config["region"] for s in default} == {"CISO", "ERCO"}
    again = study_specs("tradeoffs", seeds=[0], regions=["CISO", "ERCO"])
    assert [s.run_id for s in again] == [s.run_id for s in default]  # finished runs stay valid
    fresh = study_specs("tradeoffs", seeds=[0], regions=["PJM"])
    assert {s.config["region"] for s in fresh} == {"PJM"} and len(fresh) == len(default) // 2
    assert all(s.setting.endswith(", PJM") and "-PJM/" in s.run_id for s in fresh)
    two = study_specs("region", seeds=[0], regions=["MISO", "PJM"])
    assert {s.config["region"] for s in two} == {"MISO", "PJM"}
    # one Plain PM per setting and seed: selection and tables keep the regions apart
    plains = [(s.setting, s.seed) for s in two if s.method == "Plain PM"]
    assert len(plains) == len(set(plains)) == 2 and all(st.endswith((", MISO", ", PJM")) for st, _ in plains)
    assert {s.setting for s in study_specs("region", seeds=[0])} == {"Different agents, different λ"}
    with pytest.raises(ValueError, match="regions apply to the studies region, tradeoffs only"):
        study_specs("table2", regions=["PJM"])


def test_regions_and_select_guard_flag_errors_are_one_line(capsys):
    for argv, msg in ((["reproduce", "table2", "--regions", "PJM"], "--regions applies to the studies"),
                      (["reproduce", "tradeoffs", "--regions", "PJM", "PJM"], "--regions: PJM is given twice"),
                      (["reproduce", "tradeoffs", "--select-guard", "-0.1"], "accepted: a fraction >= 0"),
                      (["reproduce", "tradeoffs", "--select-guard", "inf"], "accepted: a fraction >= 0"),
                      (["reproduce", "tradeoffs", "--select-guard", "x"], "or none")):
        with pytest.raises(SystemExit) as e:
            cli.main([*argv, "--quick", "--report-only"])
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and "\n" not in err and "Traceback" not in err


def test_selection_flags_reach_the_study_reports(tmp_path, monkeypatch, capsys):
    seen = {}
    (tmp_path / "x.md").write_text("table")

    def fake_report(name, specs, out, figures_dir, **kw):
        seen[name] = kw
        return {"summary_md": tmp_path / "x.md", "claims": tmp_path / "x.md"}

    monkeypatch.setattr(cli, "write_study_report", fake_report)
    monkeypatch.setattr(cli, "write_combined", lambda out, figs: {"claims": "c", "selected": "s"})
    base = ["reproduce", "phone", "--quick", "--report-only", "--out", str(tmp_path / "r")]
    assert cli.main(base) == 0
    assert seen["phone"] == {"accuracy_guard": DEFAULT_ACCURACY_GUARD, "warm_start_only": DEFAULT_WARM_START_ONLY}
    assert cli.main([*base, "--select-guard", "0.5", "--select-from", "fine-tunes"]) == 0
    assert seen["phone"] == {"accuracy_guard": 0.5, "warm_start_only": True}


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
    """Two-epoch, one-batch versions of Table 1's first three runs per seed (the Plain PM and two fine-tunes)."""
    out: list[RunSpec] = []
    for s in study_specs("table1", seeds=list(seeds), quick=True)[:3]:
        cfg = {**s.config, "epochs": 2, "max_batches": 1}
        if s.init_run is not None:  # fine-tuned from the (shrunk) Plain PM of this list
            cfg["init_from"] = init_path(out[0].run_id)
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
    for key in ("summary_md", "summary_csv", "claims", "claims_csv", "selected", "distributions", "equity_time",
                "pareto_time"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0
    assert "Plain PM" in paths["summary_md"].read_text()
    claims = check_claims(runs.assign(study="table1"), "table1")
    assert {c["claim"] for c in claims} >= {"Equitable PM variance below Plain PM for every q+1"}
    claims_csv = pd.read_csv(paths["claims_csv"])
    assert list(claims_csv.columns) == ["study", "setting", "claim", "protocol", "split", "verdict"]
    assert set(claims_csv["split"]) == {"test", "train"} and set(claims_csv["verdict"]) <= {"holds", "does not hold"}
    selected = pd.read_csv(paths["selected"])
    assert list(selected.columns) == ["study", "setting", "protocol", "method", "seed", "variance", "worst", "mean",
                                      "mse"]
    assert list(selected["method"]) == ["Plain PM", "Utilitarian PM", "Equitable PM"]
    combined = write_combined(tmp_path, tmp_path / "docs")
    assert pd.read_csv(combined["selected"]).equals(selected)
    # the selection's accuracy guard reaches the report: with 0, a run stands for its method only if its validation
    # MSE is at most the Plain PM's, else the Plain PM's own held-out numbers do
    configs = pd.read_csv(paths["selected_configs"])
    plain_val = configs.loc[configs["method"] == "Plain PM", "val_mse"].iloc[0]
    guarded = pd.read_csv(write_study_report("table1", specs, tmp_path, accuracy_guard=0.0)["selected_configs"])
    for _, r in guarded[guarded["method"] != "Plain PM"].iterrows():
        assert r["start"] or r["val_mse"] <= plain_val
        if r["start"]:
            assert r["variance"] == guarded.loc[guarded["method"] == "Plain PM", "variance"].iloc[0]


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


def test_fine_tunes_start_from_the_plain_pm_of_their_seed_and_protocol(tmp_path):
    for protocol in ("time", "random"):
        specs = study_specs("tradeoffs", seeds=[0, 1], protocol=protocol)
        plain = {(s.setting, s.seed): s for s in specs if s.method == "Plain PM"}
        assert len(plain) == 12 and {s.protocol for s in specs} == {protocol}
        for s in specs:
            if s.method == "Plain PM":
                assert s.init_run is None and s.config["objective"] == "mse"
                continue
            p = plain[(s.setting, s.seed)]
            assert s.config["protocol"] == protocol
            if s.init_run is None:  # ranking agents: each exponent also from scratch, lr / sqrt(q+1), not in claims
                assert s.config["lr"] == pytest.approx(p.config["lr"] / math.sqrt(s.q_plus_1))
                assert s.config["epochs"] == p.config["epochs"] and not s.paper_grid
                continue
            assert s.init_run == p.run_id
            assert s.config["lr"] == pytest.approx(FINE_TUNE_LR_FACTOR * p.config["lr"])
            # ranking agents' studies train 4x longer (DEVIATIONS["budget"]); a fine-tune gets 80 % of it
            assert p.config["epochs"] == RANKING_EPOCHS and s.config["epochs"] == RANKING_EPOCHS * 8 // 10
        # every setting has its Utilitarian PM (q+1 = 1) beside the Equitable PMs
        for key in plain:
            assert {s.q_plus_1 for s in specs if (s.setting, s.seed) == key and s.method == "Equitable PM"} == \
                set(TRADEOFF_EXPONENTS)
    # the grid root is resolved at run time, so a run's id does not depend on where the grid lives
    ft = next(s for s in study_specs("table1", seeds=[0]) if s.init_run)
    assert ft.train_config(tmp_path).init_from == str(tmp_path / "runs" / ft.init_run / "model.pt")
    assert ft.train_config().init_from == init_path(ft.init_run)
    assert ft.config["epochs"] == FINE_TUNE_EPOCHS  # data centers keep the small budget
    # Table 2's grid gets the Utilitarian PM for model selection, kept out of the paper's claims
    t2 = study_specs("table2", seeds=[0])
    assert [s.q_plus_1 for s in t2 if not s.paper_grid and s.init_run] == [1.0, 1.0]
    # data centers: fine-tunes only (from scratch measured worse than the Plain PM on validation)
    assert all(s.init_run for s in study_specs("table1", seeds=[0]) if s.method == "Equitable PM")


def _row(method, q, val, test, run_id, init=None, beta=0.0):
    """A collect() row: validation and held-out (variance, worst, mean)."""
    return {"study": "s", "setting": "x", "protocol": "time", "seed": 0, "method": method, "q_plus_1": q,
            "beta": beta, "run_id": run_id, "init_run": init, "lr": 1e-3, "selected_epoch": 3,
            **dict(zip(("val_variance", "val_worst", "val_mean"), val)), "val_mse": 1.0,
            **dict(zip(("variance", "worst", "mean"), test)), "mse": 1.0, "c95_c5": 1.0}


def test_model_selection_reads_validation_only_with_the_mean_guard():
    plain = _row("Plain PM", np.nan, (4.0, 20.0, 10.0), (4.0, 20.0, 10.0), "p")
    util = _row("Equitable PM", 1.0, (3.0, 15.0, 8.0), (3.0, 15.0, 8.0), "u", "p")
    # q+1 = 5: admissible (mean 8.3 <= 1.05 * 8), best validation worst among the admissible; bad held out
    e5 = _row("Equitable PM", 5.0, (2.0, 12.0, 8.3), (9.0, 30.0, 12.0), "e5", "p")
    # q+1 = 20: lower validation worst but 12.5 % more mean regret than the Utilitarian PM: not admissible
    e20 = _row("Equitable PM", 20.0, (1.0, 10.0, 9.0), (0.5, 5.0, 7.0), "e20", "p")
    chosen = {r["method"]: r for r in select_seed(pd.DataFrame([plain, util, e5, e20]))}
    assert chosen["Plain PM"]["run_id"] == "p"
    assert chosen["Utilitarian PM"]["run_id"] == "u"
    assert chosen["Equitable PM"]["run_id"] == "e5" and chosen["Equitable PM"]["worst"] == 30.0  # held-out numbers
    # fine-tunes that are worse than their starting point on validation are not deployed: epoch 0 wins
    worse = [_row("Equitable PM", 1.0, (5.0, 25.0, 11.0), (1.0, 1.0, 1.0), "u", "p"),
             _row("Equitable PM", 5.0, (5.0, 24.0, 10.4), (1.0, 1.0, 1.0), "e5", "p")]
    chosen = {r["method"]: r for r in select_seed(pd.DataFrame([plain, *worse]))}
    assert chosen["Utilitarian PM"]["start"] and chosen["Utilitarian PM"]["epoch"] == 0
    assert chosen["Equitable PM"]["start"] and chosen["Equitable PM"]["worst"] == 20.0


def test_accuracy_guard_admits_only_runs_that_stay_a_forecast():
    plain = {**_row("Plain PM", np.nan, (4.0, 20.0, 10.0), (4.0, 20.0, 10.0), "p"), "val_mse": 10.0}
    util = {**_row("Equitable PM", 1.0, (3.0, 15.0, 8.0), (3.0, 15.0, 8.0), "u", "p"), "val_mse": 100.0}
    e5 = {**_row("Equitable PM", 5.0, (2.0, 12.0, 8.3), (2.5, 13.0, 8.5), "e5", "p"), "val_mse": 12.0}
    e20 = {**_row("Equitable PM", 20.0, (1.0, 10.0, 8.1), (0.5, 5.0, 7.0), "e20", "p"), "val_mse": 13.0}
    runs = pd.DataFrame([plain, util, e5, e20])
    free = {r["method"]: r["run_id"] for r in select_seed(runs)}
    assert free == {"Plain PM": "p", "Utilitarian PM": "u", "Equitable PM": "e20"}
    # +25 %: the Utilitarian run (MSE 100) and q+1 = 20 (13 > 12.5) are out; the Plain PM stands for the
    # Utilitarian PM, and q+1 = 5 (within 5 % of its mean? 8.3 <= 10.5) is the Equitable PM
    guarded = {r["method"]: r for r in select_seed(runs, accuracy_guard=0.25)}
    assert guarded["Utilitarian PM"]["start"] and guarded["Equitable PM"]["run_id"] == "e5"
    # no run passes: the Plain PM stands for both (not an empty selection)
    strict = {r["method"]: r for r in select_seed(runs, accuracy_guard=0.1)}
    assert strict["Utilitarian PM"]["start"] and strict["Equitable PM"]["start"]
    # guarding on validation mean regret instead (agents that only rank): every run here has less than the
    # Plain PM's 10, so all pass and the choice is the unguarded one
    by_mean = {r["method"]: r["run_id"] for r in select_seed(runs, accuracy_guard=0.0, guard_metric="mean")}
    assert by_mean == free
    with pytest.raises(ValueError, match="accepted: mse, mean"):
        select_seed(runs, accuracy_guard=0.1, guard_metric="variance")


def test_warm_start_only_leaves_runs_from_scratch_out():
    plain = _row("Plain PM", np.nan, (4.0, 20.0, 10.0), (4.0, 20.0, 10.0), "p")
    ft = _row("Equitable PM", 5.0, (3.0, 16.0, 8.2), (3.0, 16.0, 8.2), "ft", "p")
    util = _row("Equitable PM", 1.0, (3.0, 15.0, 8.0), (3.0, 15.0, 8.0), "u", "p")
    scratch = {**_row("Equitable PM", 5.0, (1.0, 9.0, 8.1), (9.0, 30.0, 12.0), "s"), "init_run": np.nan}
    runs = pd.DataFrame([plain, ft, util, scratch])
    assert {r["method"]: r["run_id"] for r in select_seed(runs)}["Equitable PM"] == "s"  # best on validation
    warm = {r["method"]: r["run_id"] for r in select_seed(runs, warm_start_only=True)}
    assert warm == {"Plain PM": "p", "Utilitarian PM": "u", "Equitable PM": "ft"}
    # a setting with runs from scratch only (no fine-tunes) keeps them
    alone = pd.DataFrame([plain, {**scratch, "q_plus_1": 1.0, "run_id": "s1"}, scratch])
    assert {r["method"]: r["run_id"] for r in select_seed(alone, warm_start_only=True)}["Equitable PM"] == "s"


def test_targets_on_selected_models():
    rows = []
    for seed, noise in ((0, 0.0), (1, 0.1), (2, -0.1)):
        for method, (var, worst, mean) in {"Plain PM": (4.0, 20.0, 10.0), "Utilitarian PM": (3.0, 15.0, 8.0),
                                           "Equitable PM": (2.0, 12.0, 8.2)}.items():
            rows.append({"study": "s", "setting": "x", "protocol": "time", "method": method, "seed": seed,
                         "variance": var + noise, "worst": worst + noise, "mean": mean, "mse": 1.0, "c95_c5": 1.0,
                         "start": False})
    verdicts = {c["claim"].split(":")[1].strip()[:40]: c["verdict"] for c in target_claims(pd.DataFrame(rows))}
    assert set(verdicts.values()) == {"holds"} and len(verdicts) == 3
    # mean regret 10 % above the Utilitarian PM's: the trade-off target fails, the others hold
    for r in rows:
        if r["method"] == "Equitable PM":
            r["mean"] = 8.8
    both = [c for c in target_claims(pd.DataFrame(rows)) if "Utilitarian" in c["claim"]]
    assert [c["verdict"] for c in both] == ["does not hold"] and "mean ratio 1.100" in both[0]["evidence"]


def test_compare_gives_rule_settings_to_the_fine_tunes_and_epochs_to_the_plain_pm():
    specs = compare_specs({"population": "phone", "lr": 1e-2, "epochs": 3, "estimator": "eq_ppo", "num_samples": 2,
                           "batch_size": 16}, q_values=[5.0], seeds=[0], fine_tune_epochs=2)
    plain, *fine = specs
    assert plain.config["objective"] == "mse" and plain.config["lr"] == 1e-2 and plain.config["epochs"] == 3
    assert plain.config["estimator"] == "auto" and plain.config["batch_size"] == 16
    fine = [s for s in fine if s.init_run]
    assert [s.q_plus_1 for s in fine] == [1.0, 5.0]  # the Utilitarian PM is always trained
    for s in fine:
        assert s.config["estimator"] == "eq_ppo" and s.config["num_samples"] == 2 and s.config["epochs"] == 2
        assert s.config["lr"] == pytest.approx(1e-3) and s.config["batch_size"] == 16
        assert s.init_run == plain.run_id
