"""Misuse, one case at a time: every case gives one clear line (CLI: exit status 2; API: an exception naming the
argument and what is accepted) and writes nothing; run directories are exclusive; a run killed at random points
resumes to exactly the numbers of an uninterrupted run.

``EQPM_KILL_POINTS`` sets how many SIGKILLs the resume test makes (default 2, for CI time;
``EQPM_KILL_POINTS=20 pytest tests/test_misuse.py -k sigkill`` is the issue's 20, run by hand).
"""
from __future__ import annotations

import csv
import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from eq_envs.agent_env import DownstreamAgentEnv
from eq_envs.datasets import DataError
from eq_envs.datasets.ev import load_acn_sessions
from eq_envs.datasets.grid import load_fuel_mix
from eq_envs.datasets.official import load_official_agents
from eq_envs.datasets.prices import load_caiso_da_2020
from eq_envs.datasets.signals import grid_signals
from eq_envs.datasets.validation import DATA_DIR
from eq_envs.population_env import PopulationParallelEnv
from eq_envs.sb3_env import PublicModelEnv
from trainers import cli
from trainers.config import TrainConfig
from trainers.errors import DivergenceError
from trainers.networks import build_public_model, save_public_model
from trainers.rundir import LOCK_NAME, RunDirError, RunDirLock, last_epochs
from trainers.training import train

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--population", "dc-different-different-lambda", "--epochs", "2", "--max-batches", "1", "--batch-size", "16"]


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (what "writes nothing" compares)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _fails(argv: list[str], capsys, *, match: str) -> str:
    """Run the CLI, expect exit status 2 and exactly one line on stderr containing ``match``."""
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("eqpm") and "error:" in err[0] and match in err[0], err[0]
    return err[0]


# ------------------------------------------------------------------ run directories
def test_empty_run_dir_is_refused_and_the_current_directory_untouched(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.json").write_text("mine")
    (tmp_path / "metrics.csv").write_text("mine too")
    before = _tree(tmp_path)
    _fails(["train", *TINY, "--run-dir", ""], capsys, match="run directory is empty")
    assert _tree(tmp_path) == before
    with pytest.raises(RunDirError, match="run directory is empty; accepted: a directory path"):
        train(TrainConfig(epochs=1, max_batches=1), "")


def test_run_dir_that_is_a_file_or_under_one_is_refused(tmp_path, capsys) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    _fails(["train", *TINY, "--run-dir", str(f)], capsys, match="is a file; accepted: a directory")
    _fails(["train", *TINY, "--run-dir", str(f / "sub")], capsys, match="is a file, not a directory")
    with pytest.raises(RunDirError, match="is a file"):
        train(TrainConfig(epochs=1, max_batches=1), f)
    assert _tree(tmp_path) == {"afile": b"x"}


def test_unwritable_run_dir_is_refused(tmp_path, monkeypatch, capsys) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):  # root writes anywhere: pretend the file system is read-only for this path
            import trainers.rundir as rundir

            real = os.access
            monkeypatch.setattr(rundir.os, "access", lambda p, mode: False if Path(p) == ro else real(p, mode))
        _fails(["train", *TINY, "--run-dir", str(ro / "run")], capsys, match="is not writable")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_second_run_on_a_busy_directory_is_refused_naming_the_holder_and_a_stale_lock_is_taken_over(
        tmp_path, capsys, caplog) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from trainers.rundir import RunDirLock; "
                               "RunDirLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(120)",
         str(run)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        info = json.loads((run / LOCK_NAME).read_text())
        assert info["pid"] == holder.pid and info["host"]
        line = _fails(["train", *TINY, "--run-dir", str(run)], capsys, match=f"is in use by PID {holder.pid} on host")
        assert "choose another run directory" in line
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # the refused run wrote nothing
    finally:
        holder.kill()  # SIGKILL: the lock file stays behind, naming a dead process
        holder.wait()
    assert (run / LOCK_NAME).exists()
    with caplog.at_level("WARNING", logger="trainers"):
        assert cli.main(["train", *TINY, "--run-dir", str(run)]) == 0
    assert f"stale lock of PID {holder.pid}" in caplog.text
    assert (run / "model.pt").exists() and not (run / LOCK_NAME).exists()  # released when the run ended


def test_lock_is_exclusive_within_one_process_and_released_on_errors(tmp_path) -> None:
    with RunDirLock(tmp_path / "d"):
        with pytest.raises(RunDirError, match=f"in use by PID {os.getpid()}"):
            RunDirLock(tmp_path / "d").acquire()
        with pytest.raises(RunDirError, match="in use by"):
            train(TrainConfig(epochs=1, max_batches=1), tmp_path / "d")
    cfg = TrainConfig(epochs=1, max_batches=1, batch_size=16)
    train(cfg, tmp_path / "d", tensorboard=False)
    (tmp_path / "d" / "checkpoint.pt").write_bytes(b"damaged")
    with pytest.raises(RunDirError, match="cannot be read"):  # a failure after the lock was taken ...
        train(cfg, tmp_path / "d", tensorboard=False)
    assert not (tmp_path / "d" / LOCK_NAME).exists()  # ... releases it
    with RunDirLock(tmp_path / "d"):
        pass


# ------------------------------------------------------------- settings, before anything is written
@pytest.mark.parametrize("argv,match", [
    (["--seed", "99999999999999999999"], "seed=99999999999999999999 is not accepted; accepted: an integer in [0,"),
    (["--seed", "-1"], "seed=-1 is not accepted"),
    (["--estimator", "pathwise", "--baseline", "loo"], "baseline='loo' does not apply to update rule 'pathwise'"),
    (["--baseline", "loo"], "baseline='loo' does not apply to update rule 'pathwise'"),  # 'auto' picks pathwise
    (["--estimator", "reinforce_weighted", "--baseline", "loo"], "baseline='loo' needs num_samples >= 2"),
    (["--objective", "mse", "--q", "2"], "q=2.0 does not apply to objective='mse'"),
    (["--objective", "mse", "--beta", "0"], "--beta does not apply to the Plain PM"),
    (["--objective", "mse", "--q-plus-1", "1", "--num-samples", "1"], "--num-samples, --q-plus-1 do not apply"),
    (["--objective", "mse", "--num-samples", "4"], "num_samples=4 does not apply to objective='mse'"),
    (["--objective", "mse", "--estimator", "pathwise"], "estimator='pathwise' does not apply to objective='mse'"),
    (["--lr", "nan"], "lr=nan is not accepted"),
    (["--epochs", "0"], "epochs=0 is not accepted"),
    (["--workers", "0"], "--workers 0 is not accepted; accepted: an integer >= 1"),
    (["--cpus-per-worker", "2"], "--cpus-per-worker applies with --workers N > 1 or --address only"),
    (["--workers", "2", "--objective", "mse"], "update rule 'mse' (objective='mse', the Plain PM: no per-agent work "
                                               "to split) cannot be trained over agent shards (workers=2); accepted:"),
])
def test_invalid_or_inapplicable_settings_fail_before_anything_is_written(tmp_path, capsys, argv, match) -> None:
    _fails(["train", *TINY, *argv, "--run-dir", str(tmp_path / "run")], capsys, match=match)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("model,match", [
    ({"backbone": "cnn"}, "backbone='cnn'; accepted: ('lstm', 'transformer', 'mlp')"),
    ({"backbone_kwargs": {"hidden_size": -3}}, "hidden_size must be greater than zero"),
    ({"horizon": "x"}, "model={'horizon': 'x'} is not accepted"),
    ({"head_kwargs": {"init_std": 100.0}}, "init_std=100.0 outside"),
    ({"layers": 3}, "unknown config keys ['layers']"),
])
def test_bad_model_settings_in_config_file(tmp_path, capsys, model, match) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"model": model}))
    _fails(["train", *TINY, "--config", str(cfg), "--run-dir", str(tmp_path / "run")], capsys, match=match)
    assert not (tmp_path / "run").exists()


def test_mse_settings_in_a_config_file_are_refused(tmp_path, capsys) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"objective": "mse", "beta": 0.5}))
    _fails(["train", *TINY, "--config", str(cfg), "--run-dir", str(tmp_path / "run")], capsys,
           match="beta=0.5 does not apply to objective='mse'")


@pytest.mark.parametrize("argv,match", [
    (["--seeds", "0", "0"], "--seeds: 0 is given twice"),
    (["--q-values", "3", "3"], "--q-values: 3 is given twice"),
    (["--q-plus-1", "3"], "--q / --q-plus-1 do not apply to compare; accepted: the exponents q+1 as --q-values"),
    (["--q", "2"], "do not apply to compare"),
    (["--population", "dc-different-different-lambda", "--baseline", "loo"],
     "does not apply to update rule 'pathwise'"),  # found before the Plain PM trains
    (["--seeds", "0", "99999999999999999999"], "seed=99999999999999999999 is not accepted"),
])
def test_compare_refuses_duplicates_and_settings_that_do_not_apply(tmp_path, capsys, argv, match) -> None:
    _fails(["compare", "--epochs", "1", "--max-batches", "1", *argv, "--out-dir", str(tmp_path / "c")], capsys,
           match=match)
    assert not (tmp_path / "c").exists()


def test_reproduce_refuses_duplicate_seeds_and_file_outputs(tmp_path, capsys) -> None:
    _fails(["reproduce", "table1", "--quick", "--seeds", "1", "1", "--out", str(tmp_path / "o")], capsys,
           match="--seeds: 1 is given twice")
    (tmp_path / "f").write_text("x")
    _fails(["reproduce", "table1", "--quick", "--out", str(tmp_path / "f")], capsys,
           match="is a file; accepted: a directory")
    _fails(["reproduce", "table1", "--quick", "--out", str(tmp_path / "o"), "--figures-dir", str(tmp_path / "f")],
           capsys, match="--figures-dir")
    assert not (tmp_path / "o").exists()


def test_usage_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, capsys) -> None:
    _fails(["train", "--epochs", "two", "--run-dir", str(tmp_path)], capsys, match="invalid int value: 'two'")
    _fails(["evaluate"], capsys, match="the following arguments are required: models")
    with pytest.raises(Exception, match="seed=99999999999999999999"):  # the exception itself, not SystemExit
        cli.main(["train", "--debug", *TINY, "--seed", "99999999999999999999", "--run-dir", str(tmp_path / "r")])
    with pytest.raises(Exception, match="seed=-5"):
        cli.main(["--debug", "train", *TINY, "--seed", "-5", "--run-dir", str(tmp_path / "r")])


def test_divergence_and_os_errors_are_one_line(tmp_path, capsys, monkeypatch) -> None:
    # the trainer's divergence guard raises DivergenceError; here the CLI's handling of it
    def diverge(*args, **kwargs):
        raise DivergenceError("epoch 2: the loss is NaN; lower --lr")

    monkeypatch.setattr(cli, "train", diverge)
    _fails(["train", *TINY, "--run-dir", str(tmp_path / "r")], capsys, match="epoch 2: the loss is NaN; lower --lr")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "t.csv"))

    monkeypatch.setattr(cli, "evaluate", disk_full)
    model = tmp_path / "m.pt"
    save_public_model(model, build_public_model({}))
    _fails(["evaluate", str(model), "--out", str(tmp_path / "t.csv")], capsys, match="No space left on device")


# ------------------------------------------------------------------ checkpoints and resume
@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("trained") / "run"
    assert cli.main(["train", *TINY, "--run-dir", str(run)]) == 0
    return run


def test_epochs_below_the_checkpoint_are_refused(trained, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for p in trained.iterdir():
        if p.is_file():
            (run / p.name).write_bytes(p.read_bytes())
    before = _tree(run)
    _fails(["train", *[a if a != "2" else "1" for a in TINY], "--run-dir", str(run)], capsys,
           match="the run is already at epoch 2, past epochs=1; accepted: epochs >= 2")
    assert _tree(run) == before  # config.json still says 2 epochs, model.pt kept


def test_truncated_checkpoint_is_refused_with_a_recovery_hint(trained, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    run.mkdir()
    data = (trained / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    before = _tree(run)
    line = _fails(["train", *TINY, "--epochs", "3", "--run-dir", str(run)], capsys, match="checkpoint.pt: cannot be read")
    assert f"mv {run / 'checkpoint.pt'} {run / 'checkpoint.pt'}.bad" in line
    assert _tree(run) == before


# ------------------------------------------------------------------ eqpm evaluate
class _Payload:
    """Pickles as a call that creates ``marker``: what a malicious model file would run on a plain torch.load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_evaluate_refuses_files_that_are_not_models(trained, tmp_path, capsys) -> None:
    model = trained / "model.pt"
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(model.read_bytes()[:300])
    text = tmp_path / "table.csv"
    text.write_text("a,b\n1,2\n")
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "eqpm-public-model", "x": _Payload(marker)}, evil)
    for path, match in [(truncated, "truncated, damaged or of another kind"), (text, "cannot be read as a torch file"),
                        (evil, "refusing"), (trained / "checkpoint.pt", "is not an eqpm-public-model file"),
                        (tmp_path, "is a directory"), (tmp_path / "nope.pt", "does not exist")]:
        _fails(["evaluate", str(path)], capsys, match=match)
    assert not marker.exists()  # the pickled payload never ran
    _fails(["evaluate", str(model), "--population", "ev-similar"], capsys,
           match="maps 12 past values to 1 predicted step(s); this population needs 12 -> 12")


def test_evaluate_output_paths_are_checked_before_the_work(trained, tmp_path, capsys) -> None:
    model = str(trained / "model.pt")
    _fails(["evaluate", model, "--out", str(tmp_path)], capsys, match="is a directory; accepted: a file path")
    _fails(["evaluate", model, "--out", str(tmp_path / "missing" / "t.csv")], capsys, match="does not exist")
    (tmp_path / "t_agents.csv").mkdir()
    _fails(["evaluate", model, "--out", str(tmp_path / "t.csv")], capsys, match="(per-agent file)")
    assert not (tmp_path / "t.csv").exists()


# ------------------------------------------------------------------ loaders
def _lines(path: Path) -> list[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt") as fh:
        return fh.read().splitlines()


def test_overflowing_and_non_finite_values_are_named_and_blamed_on_their_file(tmp_path) -> None:
    hdr = "Datetime (he),DA Price ($/kWh)\n"
    p = tmp_path / "da.csv"
    p.write_text(hdr + "1/1/2020 1:00,0.03\n1/1/2020 2:00,1e308\n1/1/2020 3:00,0.04\n")
    with pytest.raises(DataError, match=r"da.csv, row 2, field 'DA Price \(\$/kWh\)': value '1e308' is too large"):
        load_caiso_da_2020(p)
    p.write_text(hdr + "1/1/2020 1:00,0.03\n1/1/2020 2:00,inf\n")
    with pytest.raises(DataError, match="da.csv, row 2, field 'DA Price .*': non-finite value 'inf'"):
        load_caiso_da_2020(p)
    # through the whole signal pipeline, the price file -- not the bundled fuel mix -- is named
    rows = _lines(DATA_DIR / "prices" / "caiso_da_hourly_2020.csv.gz")
    rows[500] = ",".join([rows[500].split(",")[0], "1e308", *rows[500].split(",")[2:]])
    big = tmp_path / "da_big.csv"
    big.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"da_big.csv, row 500, field 'DA Price"):
        grid_signals("CISO", price_source="caiso_da_2020", price_path=big)


def test_files_cut_short_are_detected(tmp_path) -> None:
    fm = _lines(DATA_DIR / "grid" / "eia_fuelmix_2022_CISO.csv.gz")
    cut = tmp_path / "fuelmix.csv"
    cut.write_text("\n".join(fm[:101]) + "\n" + fm[101][:30])  # the last row ends mid-row
    with pytest.raises(DataError, match=r"fuelmix.csv, row 101: \d fields where the header has 10 \(a row cut short"):
        load_fuel_mix(path=cut)
    gz = tmp_path / "eia_fuelmix_2022_CISO.csv.gz"
    data = (DATA_DIR / "grid" / "eia_fuelmix_2022_CISO.csv.gz").read_bytes()
    gz.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cannot be parsed as CSV"):
        load_fuel_mix(path=gz)
    acn = _lines(DATA_DIR / "official" / "caltech_ev_dataset_detail.csv.gz")
    cut = tmp_path / "acn.csv"
    cut.write_text("\n".join(acn[:200]) + "\n" + acn[200][: len(acn[200]) // 2])
    with pytest.raises(DataError, match="acn.csv, row 200: .* fields where the header has"):
        load_acn_sessions(cut)


def test_a_files_year_is_checked_and_covered(tmp_path) -> None:
    fm = _lines(DATA_DIR / "grid" / "eia_fuelmix_2022_CISO.csv.gz")
    wrong = tmp_path / "eia_fuelmix_2021_CISO.csv"
    wrong.write_text("\n".join(fm) + "\n")
    with pytest.raises(DataError, match="row 1, field 'timestamp': timestamp 2022-01-01 00:00:00[+]00:00 lies outside "
                                        "2021, the year"):
        load_fuel_mix(path=wrong)
    short = tmp_path / "eia_fuelmix_2022_CISO.csv"
    short.write_text("\n".join(fm[:4001]) + "\n")  # cut at a row boundary
    with pytest.raises(DataError, match="covers 2022-01-01 00:00:00 to 2022-06-16 15:00:00, not the whole year 2022"):
        load_fuel_mix(path=short)
    unnamed = tmp_path / "my_fuel_mix.csv"  # no year in the name: a shorter series is the user's choice
    unnamed.write_text("\n".join(fm[:4001]) + "\n")
    assert len(load_fuel_mix(path=unnamed)) == 4000


def test_official_agents_file_cut_in_half_is_detected(tmp_path) -> None:
    rows = _lines(DATA_DIR / "official" / "dc_different_agents_train.csv")
    half = tmp_path / "dc_train.csv"
    half.write_text("\n".join(rows[: len(rows) // 2]) + "\n")
    with pytest.raises(DataError, match=r"dc_train.csv, field 'agent': 25 agents \(file cut short\?\); accepted: 50"):
        load_official_agents("dc", "train", path=half)
    short = tmp_path / "dc_short.csv"
    short.write_text("\n".join(rows[:-40]) + "\n")  # the last agent loses 40 of its 117 values
    with pytest.raises(DataError, match="agent 49 has 77 values where the others have 117-118"):
        load_official_agents("dc", "train", path=short)
    with pytest.raises(DataError, match=r"agent 24 has \d+ values where the others have 117-118"):
        load_official_agents("dc", "train", path=half, num_agents=25)  # the cut also split agent 24


# ------------------------------------------------------------------ environments
def test_envs_refuse_step_before_reset() -> None:
    from gymnasium.error import ResetNeeded

    for env, action in [(DownstreamAgentEnv(), np.array([5.0])),
                        (PublicModelEnv("dc-different-same-lambda", layout="shared"), np.array([5.0]))]:
        with pytest.raises(ResetNeeded, match=r"step\(\) called before reset\(\)"):
            env.step(action)
    penv = PopulationParallelEnv("phone")
    with pytest.raises(ResetNeeded, match=r"step\(\) called before reset\(\)"):
        penv.step({a: np.full(12, 5.0) for a in penv.possible_agents})


@pytest.mark.parametrize("make,match", [
    (lambda: DownstreamAgentEnv(agent=1.5), r"agent=1.5; accepted: an integer in 0..49"),
    (lambda: DownstreamAgentEnv(agent=True), r"agent=True; accepted: an integer"),
    (lambda: DownstreamAgentEnv(episode_length=1.5), r"episode_length=1.5; accepted: an integer in 1..\d+ or None"),
    (lambda: PopulationParallelEnv("phone", episode_length=2.0), r"episode_length=2.0; accepted: an integer"),
    (lambda: PublicModelEnv(episode_length=0), r"episode_length=0; accepted: an integer in 1.."),
    (lambda: DownstreamAgentEnv(split="validation"), r"split='validation'; accepted: train, val, test"),
])
def test_env_arguments_are_checked(make, match) -> None:
    with pytest.raises(ValueError, match=match):
        make()


def test_env_population_of_the_wrong_type() -> None:
    for cls in (DownstreamAgentEnv, PopulationParallelEnv, PublicModelEnv):
        with pytest.raises(TypeError, match="population=3; accepted: a population name"):
            cls(population=3)


def test_actions_outside_the_box_are_refused_the_same_way_everywhere() -> None:
    single = DownstreamAgentEnv("phone", episode_length=4)
    parallel = PopulationParallelEnv("phone", episode_length=4)
    public = PublicModelEnv("phone", episode_length=4)
    single.reset(seed=0)
    parallel.reset(seed=0)
    public.reset(seed=0)
    box = single.action_space
    assert box == parallel.action_space(parallel.possible_agents[0]) == public.action_space
    too_high = np.full(12, float(box.high[0]) + 1.0)
    too_high[1:] = 5.0
    pattern = r"action value [\d.]+ at \(0,\) is outside the action space; accepted: values in \[-?[\d.]+, [\d.]+\]"
    with pytest.raises(ValueError, match=pattern):
        single.step(too_high)
    with pytest.raises(ValueError, match=pattern):
        parallel.step({a: too_high for a in parallel.possible_agents})
    with pytest.raises(ValueError, match=pattern):
        public.step(too_high)
    with pytest.raises(TypeError, match=r"actions is a list; accepted: a dict \{agent name: action\}"):
        parallel.step([too_high] * 18)
    # on the bound itself (as RescaleAction produces it, in float64) the action is scored as given
    edge = np.full(12, float(box.low[0]), dtype=np.float64)
    assert np.isfinite(single.step(edge)[1])


# ------------------------------------------------------------------ Ctrl-C and SIGKILL, then resume
EPOCHS = 12


def _cli(run: Path) -> list[str]:
    return [sys.executable, "-m", "trainers.cli", "train", "--population", "dc-different-different-lambda",
            "--epochs", str(EPOCHS), "--max-batches", "2", "--batch-size", "32", "--seed", "3", "--run-dir", str(run)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "EQPM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300.0) -> bool:
    t0 = time.monotonic()
    while not path.exists():
        if proc.poll() is not None or time.monotonic() - t0 > timeout:
            return False
        time.sleep(0.005)
    return True


def _metrics(run: Path) -> list[dict[str, str]]:
    try:
        with (run / "metrics.csv").open(newline="") as fh:
            return list(csv.DictReader(fh))
    except OSError:
        return []


def _state(run: Path) -> tuple[dict, list, list]:
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    blob = torch.load(run / "model.pt", weights_only=True)
    history = [{k: v for k, v in h.items() if k != "seconds"} for h in ck["history"]]
    metrics = [{k: v for k, v in r.items() if k != "seconds"} for r in _metrics(run)]  # wall time differs, rightly
    return {**blob["state_dict"], **dict(_flat(ck["optimizer"], "opt."))}, history, metrics


def _flat(d, prefix=""):
    for k, v in (d.items() if isinstance(d, dict) else enumerate(d)):
        if isinstance(v, (dict, list, tuple)):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def _same(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k]
                                        for k in a)


@pytest.mark.slow
def test_ctrl_c_then_sigkill_at_random_points_then_resume_is_bit_identical(tmp_path) -> None:
    ref = tmp_path / "ref"
    assert subprocess.run(_cli(ref), env=_env(), capture_output=True).returncode == 0
    epoch_s = max(float(np.median([float(r["seconds"]) for r in _metrics(ref)])), 0.05)

    run = tmp_path / "run"
    # Ctrl-C: exit 130, the epoch it stopped in, how to resume; the checkpoint stays
    p = subprocess.Popen(_cli(run), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert _wait_for(run / "checkpoint.pt", p)
    p.send_signal(signal.SIGINT)
    err = p.communicate()[1]
    if p.returncode != 0:  # (0: it finished first)
        assert p.returncode == 130
        last = err.strip().splitlines()[-1]
        assert last.startswith("eqpm: interrupted at epoch ") and "; run the same command again to resume (from " \
            "the checkpoint of epoch " in last, last
        assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] >= 1
        assert not (run / LOCK_NAME).exists()

    # SIGKILL at random points of the run: once metrics.csv shows epoch e (a random epoch of the run), wait a random
    # part of an epoch -- the kill lands in the checkpoint write that follows, in the next epoch, or (when the
    # resumed run is already past e) in the start-up of a run: loading, taking over the stale lock
    rng = random.Random(20240612)
    kills = int(os.environ.get("EQPM_KILL_POINTS", "2"))
    points = sorted((rng.randrange(EPOCHS), rng.uniform(0.0, epoch_s)) for _ in range(kills))
    for epoch, offset in points:
        p = subprocess.Popen(_cli(run), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if _wait_for(run / LOCK_NAME, p):
            while p.poll() is None and int((_metrics(run) or [{"epoch": 0}])[-1]["epoch"]) < epoch:
                time.sleep(0.002)
            time.sleep(offset)
        p.send_signal(signal.SIGKILL)  # whatever it was doing: loading, training, writing a checkpoint or metrics
        p.wait()
        print(f"SIGKILL after epoch {epoch} + {offset:.3f} s: checkpoint at epoch {last_epochs(run)[1]}")  # pytest -s
    done = subprocess.run(_cli(run), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    mine, theirs = _state(run), _state(ref)
    assert _same(mine[0], theirs[0])  # model and optimizer: bit-identical
    assert mine[1] == theirs[1] and mine[2] == theirs[2]  # every epoch's logged numbers
    assert not (run / LOCK_NAME).exists()


@pytest.mark.parametrize("command", ["train", "evaluate", "compare", "reproduce", "benchmark"])
def test_every_command_prints_its_help_in_a_narrow_terminal(command, monkeypatch, capsys):
    # argparse wraps long usage lines at the terminal's width; a group of suppressed options once broke that for
    # compare ("AssertionError" instead of help)
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: eqpm {command}")
