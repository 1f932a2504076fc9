"""Data-parallel training over agent shards (trainers/distributed.py) gives the single process's numbers.

Tolerances: the workers sum the same per-agent terms as one process, in another
order (each worker sums its agents, then gloo sums the workers), so the numbers
agree up to floating-point rounding that a few optimizer steps carry forward:
every parameter within ``rtol=1e-4, atol=1e-5`` and every per-epoch metric
within a relative ``1e-5`` (measured on the cases below: parameters within
2.4e-6, metrics within 1.3e-6 relative, the largest for ``eq_ppo``).  The
models are an MLP or the data centers' LSTM: in the Transformer, the attention's key biases have an exactly zero gradient (softmax
does not see them), so Adam turns rounding noise into full-size steps of either
sign there, in any two runs that round differently (docs/trainer.md).
"""
from __future__ import annotations

import contextlib
import io
import math
import queue
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from agents.gym_env_group import GymEnvAgentGroup
from eq_envs.agent_env import DownstreamAgentEnv
from eq_envs.agent_shards import population_shard, shard_ranges
from eq_envs.population import Population
from eq_envs.presets import build_population
from trainers.config import ConfigError, TrainConfig
from trainers.distributed import _worker_error, check_settings, train_distributed, train_worker
from trainers.networks import load_public_model
from trainers.training import CSV_FIELDS, train
from trainers.updates import RULES, SingleStepRule

MLP = {"backbone": "mlp", "backbone_kwargs": {"hidden": [32]}}
SMALL = dict(epochs=2, max_batches=2, batch_size=32, seed=3)


def assert_same_run(single: dict, other: dict, what: str) -> None:
    """Parameters and every numeric per-epoch metric of two runs agree within the module's tolerances."""
    assert single["model"].keys() == other["model"].keys()
    for k, v in single["model"].items():
        torch.testing.assert_close(other["model"][k], v, rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{what} {k}: {m}")
    assert [h["epoch"] for h in other["history"]] == [h["epoch"] for h in single["history"]], what
    for a, b in zip(single["history"], other["history"]):
        for k in CSV_FIELDS:
            if k == "seconds" or not isinstance(a.get(k), (int, float)):
                continue
            x, y = float(a[k]), float(b[k])
            assert (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-12), \
                f"{what}: epoch {a['epoch']} {k}: one process {x!r}, workers {y!r}"


def _single(cfg: TrainConfig, run_dir: Path | None = None) -> dict:
    res = train(cfg, run_dir, tensorboard=False)
    return {"model": res.model.state_dict(), "history": res.history}


# ---------------------------------------------------------------------- shards score as the whole population
@pytest.mark.parametrize("population,layout,shards", [("ev-similar", "shared", 2), ("ev-similar", "chunked", 3),
                                                      ("mixed", "shared", 3), ("dc-similar-different-lambda",
                                                                               "chunked", 2)])
def test_shards_score_their_agents_as_the_whole_population(population: str, layout: str, shards: int) -> None:
    pop = build_population(population, layout=layout)
    idx = torch.tensor([0, 5, 17, pop.num_steps - 1])
    g = torch.Generator().manual_seed(0)
    per_agent = pop.truth(idx).expand(pop.num_agents, -1, -1) + torch.randn(pop.num_agents, 4, pop.horizon, generator=g,
                                                                            dtype=torch.float64)
    whole = pop.evaluate(per_agent, idx)
    ranges = shard_ranges(pop.num_agents, shards)
    parts = [population_shard(pop, r) for r in ranges]
    assert [p.num_agents for p in parts] == [r.stop - r.start for r in ranges]
    got = torch.cat([p.regret(per_agent[r], idx) for p, r in zip(parts, ranges)])
    assert torch.equal(got, whole.regret)  # bit for bit
    # a view is itself evaluated in memory-budget shards (a few agents each here): the same numbers
    tiny = torch.cat([p.regret(per_agent[r], idx, memory_budget=4096) for p, r in zip(parts, ranges)])
    assert torch.equal(tiny, whole.regret)
    for p, r in zip(parts, ranges):
        assert p.agent_names == pop.agent_names[r]
        assert torch.equal(p.agent_weights, pop.agent_weights[r])
        if layout == "chunked":  # each agent keeps its own stretch of the signal
            assert torch.equal(p.observation(idx), pop.observation(idx)[r])
            assert torch.equal(p.truth(idx), pop.truth(idx)[r])
        else:
            assert torch.equal(p.observation(idx), pop.observation(idx))
            assert torch.equal(p.regret(per_agent[:1], idx), pop.regret(per_agent[:1], idx)[r])


def test_shard_ranges_cover_the_agents_evenly() -> None:
    ranges = shard_ranges(70, 3)
    assert ranges == [slice(0, 23), slice(23, 46), slice(46, 70)]
    with pytest.raises(ValueError, match="4 shards of 3 agents"):
        shard_ranges(3, 4)


def test_settings_that_cannot_be_sharded_are_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="update rule 'mse' \\(objective='mse', the Plain PM: no per-agent work to "
                                          "split\\) cannot be trained over agent shards \\(workers=2\\); accepted: an "
                                          "Equitable PM with estimator eq_ppo, pathwise, reinforce_paper, "
                                          "reinforce_paper_combined, reinforce_weighted, or one process"):
        check_settings(TrainConfig(population="phone", objective="mse"), 2)

    class Unmarked(SingleStepRule):  # a user's rule that does not declare the AgentShard contract
        name = "unmarked_example"

    monkeypatch.setitem(RULES, Unmarked.name, Unmarked)
    with pytest.raises(ConfigError, match="update rule 'unmarked_example' \\(estimator='unmarked_example': not "
                                          "marked shardable"):
        check_settings(TrainConfig(population="phone", estimator="unmarked_example"), 2)
    with pytest.raises(ConfigError, match="workers=19 is more than the 18 agents"):
        check_settings(TrainConfig(population="phone"), 19)
    with pytest.raises(ConfigError, match="workers=0 is not accepted"):
        train_distributed(TrainConfig(population="phone"), workers=0)
    pop = build_population("ev-similar", layout="shared")
    envs = GymEnvAgentGroup([lambda m=m: DownstreamAgentEnv(pop, agent=m, episode_length=1) for m in range(3)],
                            horizon=12)
    wrapped = Population("as-envs", pop.signal, "train", pop.split_range, [envs], horizon=12, layout="shared")
    with pytest.raises(ConfigError, match="agent group 'gym_env' .* cannot be split over workers"):
        check_settings(TrainConfig(population="ev-similar"), 2, pop=wrapped)


def test_a_workers_error_comes_back_as_itself() -> None:
    class WorkerGroupError(Exception):  # the shape of Ray Train's: the workers' exceptions by rank
        worker_failures = {1: ConfigError("from rank 1"), 0: ConfigError("from rank 0")}

    err = _worker_error(WorkerGroupError())
    assert isinstance(err, ConfigError) and str(err) == "from rank 0"
    other = RuntimeError("controller")
    assert _worker_error(other) is other


# ---------------------------------------------------------------------- two gloo processes (no Ray)
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gloo_worker(rank: int, world: int, port: int, jobs: list, results) -> None:
    import os
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        done = [train_worker(cfg, run_dir, stop_after_epoch=stop, tensorboard=False) for cfg, run_dir, stop in jobs]
    finally:
        dist.destroy_process_group()
    if rank == 0:
        buf = io.BytesIO()
        torch.save(done, buf)
        results.put(buf.getvalue())
        results.close()
        results.join_thread()  # the result is in the pipe before the process ends
    # Leave without the interpreter's teardown: on a loaded machine gloo's threads were seen to abort there
    # ("terminate called without an active exception", exit -6) after a clean destroy_process_group, which says
    # nothing about the numbers; an error inside training still ends the process with its traceback above.
    os._exit(0)


def _run_gloo(jobs: list, world: int = 2) -> list:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_gloo_worker, args=(r, world, port, jobs, results)) for r in range(world)]
    for p in procs:
        p.start()
    try:
        while True:  # a worker that fails ends both (the other raises the same error or loses its peer)
            with contextlib.suppress(queue.Empty):
                done = torch.load(io.BytesIO(results.get(timeout=1)), weights_only=True)
                break
            assert not any(p.exitcode not in (None, 0) for p in procs), "a gloo worker failed (see its traceback)"
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)
    return done


def test_gloo_workers_match_one_process_for_every_shardable_rule(tmp_path: Path) -> None:
    """eq_ppo (several groups with weights, shards across a group boundary, target-KL stop), pathwise with the MSE
    term and in the power form (its weights p·C̄^q), the chunked layout with the MSE term and linear credit, the
    paper's estimator and its combined objective (Eq. 37: the sampled predictions' loss summed over all agents),
    and resumed runs."""
    cases = {
        "eq_ppo mixed": TrainConfig(population="mixed", q_plus_1=3, estimator="eq_ppo", num_samples=2, model=MLP,
                                    update={"epochs": 2, "minibatches": 2, "target_kl": 0.05}, **SMALL),
        "pathwise dc beta": TrainConfig(population="dc-different-different-lambda", q_plus_1=3, beta=0.3, **SMALL),
        "pathwise power": TrainConfig(population="dc-different-different-lambda", q_plus_1=3, form="power", **SMALL),
        "chunked beta linear": TrainConfig(population="ev-similar", layout="chunked", q_plus_1=2, beta=0.2,
                                           credit="linear", model=MLP, **SMALL),
        "reinforce_paper": TrainConfig(population="phone", q_plus_1=2, estimator="reinforce_paper", model=MLP,
                                       **SMALL),
        "reinforce_paper_combined chunked": TrainConfig(population="ev-similar", layout="chunked", q_plus_1=2,
                                                        estimator="reinforce_paper_combined", beta=0.3, model=MLP,
                                                        **SMALL),
    }
    resumed = TrainConfig(population="ev-similar", q_plus_1=3, model=MLP, **{**SMALL, "epochs": 3})
    train(resumed, tmp_path / "from_one", stop_after_epoch=1, tensorboard=False)  # one process's checkpoint
    jobs = [(cfg, None, None) for cfg in cases.values()]
    jobs += [(resumed, str(tmp_path / "workers"), 1), (resumed, str(tmp_path / "workers"), None),
             (resumed, str(tmp_path / "from_one"), None)]
    done = _run_gloo(jobs)
    for (what, cfg), got in zip(cases.items(), done):
        assert_same_run(_single(cfg), got, what)
    # stopped after epoch 1 and resumed by the workers (from their own checkpoint, and from one process's):
    # the single process's uninterrupted run
    single = _single(resumed, tmp_path / "single")
    assert len(done[-3]["history"]) == 1
    assert_same_run(single, done[-2], "stopped and resumed by the workers")
    assert_same_run(single, done[-1], "resumed by the workers from one process's checkpoint")
    saved = load_public_model(tmp_path / "workers" / "model.pt").state_dict()
    assert all(torch.equal(saved[k], v) for k, v in done[-2]["model"].items())
    assert (tmp_path / "workers" / "metrics.csv").read_text().splitlines()[0] == \
        (tmp_path / "single" / "metrics.csv").read_text().splitlines()[0]


# ---------------------------------------------------------------------- the test: 2 Ray Train workers
def test_two_ray_train_workers_match_one_process(tmp_path: Path) -> None:
    """EVs (difference credit over all agents' means), validation and selection on, the run directory written by
    rank 0 in the single-process format: a single process resumes it to the numbers of its own run."""
    cfg = TrainConfig(population="ev-similar", q_plus_1=3, model=MLP, **SMALL)
    res = train_distributed(cfg, tmp_path / "workers", workers=2, tensorboard=False)
    single = _single(cfg)
    assert_same_run(single, {"model": res.model.state_dict(), "history": res.history}, "2 Ray Train workers")
    assert res.selected_epoch in (1, 2) and res.history[-1]["decisions"] == single["history"][-1]["decisions"]
    longer = TrainConfig(population="ev-similar", q_plus_1=3, model=MLP, **{**SMALL, "epochs": 3})
    continued = train(longer, tmp_path / "workers", tensorboard=False)  # the workers' checkpoint, one process
    assert_same_run(_single(longer), {"model": continued.model.state_dict(), "history": continued.history},
                    "resumed by one process")
