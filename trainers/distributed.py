r"""Data-parallel training of one public model over agent shards, with Ray Train (``TorchTrainer``, DDP over gloo).

A public model serves many agents; one update needs every agent's regrets for
the same sampled predictions, and scoring them (each agent's decision and its
hindsight optimum) is where the time goes for large populations.
:func:`train_distributed` splits the *agents* over ``W`` worker processes --
local by default, or the nodes of a Ray cluster given by ``address`` -- and
trains one public model whose numbers equal :func:`trainers.training.train`'s
for the same settings and seed, up to the order of floating-point sums
(tested on 2 local workers; the tolerance is in ``tests/test_distributed.py``).

Each worker
-----------
* holds a contiguous shard of the agents (:func:`eq_envs.agent_shards.shard_ranges`;
  sizes differ by at most one) as a population of its own
  (:func:`eq_envs.agent_shards.population_shard`), and a full replica of the
  model wrapped in PyTorch's ``DistributedDataParallel`` over gloo (the process
  group Ray Train's ``TorchTrainer`` sets up on CPU);
* draws the *whole* population's noise ``[K, M, B, H]`` from the run's generator,
  exactly as one process does, and keeps its agents' slice, so its samples are
  the single process's and every worker's generator stays in step.  The cost:
  each worker draws and briefly holds ``4·K·M·B·H`` bytes per batch (300 MB and
  a few tenths of a second at 50,000 agents, ``K = 1``, ``B = 128``, ``H = 12``),
  the one part of a rollout that does not shrink with more workers;
* scores its shard, and reduces over *all* agents through the rule's
  :class:`WorkerShard` (:class:`trainers.updates.base.AgentShard`): the per-agent
  mean regrets that set the equitable weights and credit are all-reduced into
  the full ``[M]`` (``[K, M]``) vector, so every worker computes the single
  process's weights and difference credit -- which need the norm over all
  agents -- for its own agents; ``eq_ppo``'s advantage normalisation, KL and
  clip fraction are global means;
* builds its share of the surrogate: a sum over its agents (and ``1/W`` of the
  MSE term in the shared layout, its agents' fraction of it in the chunked
  layout).  DDP all-reduces the gradients with a *sum* hook, so every worker
  holds the single process's gradient (a sum over agents) and takes the same
  Adam step; parameters stay identical on every worker without broadcasts.

Rank 0 does what one process does besides: it validates (on the whole
validation population), keeps the history and writes the run directory --
``config.json``, ``metrics.csv``, ``tb/``, ``checkpoint.pt`` and ``model.pt``,
in the single-process format, so a run can be resumed by either trainer (the
checkpoint's ``rule`` state, e.g. ``eq_ppo``'s running means over all agents, is
the same on every worker).  The driver (the calling process) checks every
setting and holds the run directory's lock before any worker starts; worker
errors come back as the exception the worker raised (``ConfigError``,
``DivergenceError``, ...).  On a cluster, give a run directory on a file system
the driver and rank 0 share.

Supported: every update rule marked ``shardable`` (``reinforce_weighted``,
``reinforce_paper``, ``reinforce_paper_combined``, ``eq_ppo``, ``pathwise``;
not the Plain PM's ``mse``, which has no per-agent work to split), both
layouts, the combined objective, every scale setting, validation and
selection, resume.  Not supported (refused by :func:`check_settings` in one
line): rules not marked ``shardable``, and agent groups that score themselves
(:func:`eq_envs.agent_shards.check_shardable`), e.g. the Gymnasium-env group.  Each worker uses ``cpus_per_worker`` torch threads
(``EQPM_THREADS`` overrides).  Measured speed-ups are in BENCHMARKS.md.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel

from eq_envs.agent_shards import check_shardable, population_shard, shard_ranges
from eq_envs.population import Population
from trainers.config import ConfigError, TrainConfig
from trainers.networks import build_public_model
from trainers.rundir import RunDirLock, check_run_dir
from trainers.selection import Selector
from trainers.training import (
    TrainResult,
    _build_model,
    _EpochAccumulator,
    _EpochLoop,
    _finish,
    _make_selector,
    _open_checkpoint,
    _record_config,
    _restore,
    _set_threads,
    build_update_rule,
)
from trainers.updates import UpdateRule
from trainers.updates.base import AgentShard

log = logging.getLogger("trainers")
T = TypeVar("T")


# ---------------------------------------------------------------------- the collectives a rule reduces through
class WorkerShard(AgentShard):
    """A worker's contiguous shard of the agents; reductions over all agents are gloo all-reduces.

    Args:
        agents: the shard's agents among the population's ``num_agents``.
        num_agents: ``M``, all agents.
        per_agent_inputs: the chunked layout (agents see their own inputs), where a
            mean over the public inputs is a mean over agents' inputs.
        world: ``W``, the number of workers.
    """

    def __init__(self, agents: slice, num_agents: int, per_agent_inputs: bool, world: int) -> None:
        self.agents, self.num_agents, self.per_agent_inputs = agents, int(num_agents), bool(per_agent_inputs)
        self.size = agents.stop - agents.start
        # shared layout: every worker computes the same MSE, 1/W of it each; chunked: the shard's agents' fraction
        self.input_share = self.size / self.num_agents if self.per_agent_inputs else 1.0 / world

    def gather(self, x: Tensor) -> Tensor:
        # every worker fills its columns of a zero [..., M] tensor and the sum is exact (x + 0 = x)
        full = x.new_zeros((*x.shape[:-1], self.num_agents))
        full[..., self.agents] = x
        dist.all_reduce(full)
        return full

    def _total(self, *sums: Tensor) -> Tensor:
        t = torch.stack([s.to(torch.float64) for s in sums])
        dist.all_reduce(t)
        return t

    def mean(self, x: Tensor) -> Tensor:
        s, n = self._total(x.sum(dtype=torch.float64), torch.tensor(float(x.numel())))
        return (s / n).to(x.dtype)

    def mean_std(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean = self.mean(x)
        ss, n = self._total(((x - mean) ** 2).sum(dtype=torch.float64), torch.tensor(float(x.numel())))
        return mean, (ss / (n - 1)).sqrt().to(x.dtype)

    def input_mean(self, value: Tensor) -> Tensor:
        if not self.per_agent_inputs:
            return value
        return self._total(value.detach().double() * (self.size / self.num_agents))[0].to(value.dtype)


def _sum_hook(process_group, bucket):  # no annotations: DDP checks them against its own types at runtime
    """DDP communication hook: all-reduce a gradient bucket by *sum* (DDP's default averages)."""
    work = dist.all_reduce(bucket.buffer(), group=process_group, async_op=True)
    return work.get_future().then(lambda fut: fut.value()[0])


class _Policy(torch.nn.Module):
    """The public model as the rollout collector and the rules call it (``distribution``, ``parameters``), via DDP."""

    def __init__(self, ddp: DistributedDataParallel) -> None:
        super().__init__()
        self.ddp = ddp

    def distribution(self, x: Tensor):
        return self.ddp(x)  # PublicModel.forward is its distribution(); DDP must see the forward to sync gradients


def _from_rank0(make: Callable[[], T]) -> T:
    """Rank 0 runs ``make``; every rank gets its result, or raises the exception it raised (no rank hangs)."""
    box: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = ("ok", make())
        except Exception as exc:  # noqa: BLE001 - handed to every rank, which re-raises it
            box[0] = ("error", exc)
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


# ---------------------------------------------------------------------- settings
def check_settings(cfg: TrainConfig, workers: int, pop: Population | None = None) -> tuple[Population, UpdateRule]:
    """The training population and update rule of ``cfg`` on ``workers`` workers, or a one-line ``ConfigError``."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers={workers!r} is not accepted; accepted: an integer >= 1")
    pop = cfg.build_population("train") if pop is None else pop
    if int(cfg.model_config.get("horizon", 1)) != pop.horizon:
        raise ConfigError(f"model horizon {cfg.model_config.get('horizon')} does not match population {pop.name} "
                          f"horizon {pop.horizon}")
    rule = build_update_rule(cfg, pop)
    if not rule.shardable:
        from trainers.updates import RULES
        accepted = ", ".join(n for n, r in RULES.items() if r.shardable)
        why = ("objective='mse', the Plain PM: no per-agent work to split" if rule.name == "mse" else
               f"estimator={rule.name!r}: not marked shardable, docs/trainer.md")
        raise ConfigError(f"update rule {rule.name!r} ({why}) cannot be trained over agent shards (workers={workers}); "
                          f"accepted: an Equitable PM with estimator {accepted}, or one process (eqpm train without "
                          f"--workers, trainers.training.train)")
    if workers > pop.num_agents:
        raise ConfigError(f"workers={workers} is more than the {pop.num_agents} agents of population {pop.name}; "
                          f"accepted: 1 to {pop.num_agents} workers")
    try:
        check_shardable(pop)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return pop, rule


# ---------------------------------------------------------------------- the driver
def train_distributed(cfg: TrainConfig, run_dir: str | Path | None = None, *, workers: int = 2,
                      address: str | None = None, cpus_per_worker: int = 1, resume: bool = True,
                      progress: bool = False, stop_after_epoch: int | None = None,
                      tensorboard: bool = True) -> TrainResult:
    """Train as :func:`trainers.training.train` does, on ``workers`` Ray Train workers (module docstring).

    Args:
        cfg, run_dir, resume, stop_after_epoch, tensorboard: as :func:`trainers.training.train`.
        workers: ``W`` worker processes, each holding ``M / W`` of the agents.
        address: a Ray cluster to join (``"auto"``, ``"ray://host:10001"``); ``None`` starts a local Ray
            instance on this machine (or uses the one this process already started) declaring at least
            ``workers · cpus_per_worker`` CPUs, so that more workers than cores share the cores.
        cpus_per_worker: CPUs Ray reserves for each worker, and its torch threads.
        progress: rank 0 prints one line per epoch (forwarded by Ray to this process's output).

    Raises:
        ConfigError, RunDirError, DivergenceError: as :func:`trainers.training.train`, whichever worker raised it.
    """
    check_settings(cfg, workers)  # every setting, before anything starts (the workers build their own shards)
    if isinstance(cpus_per_worker, bool) or not isinstance(cpus_per_worker, int) or cpus_per_worker < 1:
        raise ConfigError(f"cpus_per_worker={cpus_per_worker!r} is not accepted; accepted: an integer >= 1")
    if address is not None and (not isinstance(address, str) or not address.strip()):
        raise ConfigError(f"address={address!r} is not accepted; accepted: a Ray address (auto, ray://host:10001)")
    out = check_run_dir(run_dir).resolve() if run_dir is not None else None

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    with contextlib.ExitStack() as held:
        if out is not None:
            held.enter_context(RunDirLock(out))  # the settings are checked: only now is anything written
        if not ray.is_initialized():
            if address is None:
                # "local": a new instance even where RAY_ADDRESS or a `ray start` on this machine names another
                ray.init(address="local", num_cpus=max(os.cpu_count() or 1, workers * cpus_per_worker),
                         include_dashboard=False, log_to_driver=progress, configure_logging=False)
            else:
                ray.init(address=address, log_to_driver=progress, configure_logging=False)
            held.callback(ray.shutdown)
        storage = held.enter_context(tempfile.TemporaryDirectory(prefix="eqpm-ray-"))
        job = {"cfg": cfg, "run_dir": str(out) if out is not None else None, "resume": resume,
               "stop_after_epoch": stop_after_epoch, "tensorboard": tensorboard, "progress": progress,
               "threads": cpus_per_worker, "cwd": os.getcwd()}
        trainer = TorchTrainer(_worker_main, train_loop_config=job,  # type: ignore[arg-type]  # (returns bytes)
                               torch_config=TorchConfig(backend="gloo"),
                               scaling_config=ScalingConfig(num_workers=workers, use_gpu=False,
                                                            resources_per_worker={"CPU": cpus_per_worker}),
                               run_config=RunConfig(name=f"eqpm-{int(time.time())}", storage_path=storage))
        try:
            result = trainer.fit()
        except Exception as exc:
            raise _worker_error(exc) from None
    # rank 0's return value (Ray Train V2's Result.return_value), as torch.save bytes
    done = torch.load(io.BytesIO(result.return_value), weights_only=True)  # type: ignore[attr-defined]
    model = build_public_model(cfg.model_config)
    model.load_state_dict(done["model"])
    model.eval()
    return TrainResult(model=model, history=done["history"], run_dir=out, selected_epoch=done["selected_epoch"],
                       stopped_early=done["stopped_early"])


def _worker_error(exc: Exception) -> Exception:
    """The exception a worker raised (rank 0's first), from Ray Train's ``WorkerGroupError``; else ``exc``."""
    failures = getattr(exc, "worker_failures", None) or {}
    for rank in sorted(failures):
        err = failures[rank]
        cause = getattr(err, "cause", None)  # a RayTaskError wraps the worker's own exception
        return cause if isinstance(cause, Exception) else err
    return exc


def _worker_main(job: dict[str, Any]) -> bytes | None:
    """Ray Train's ``train_loop_per_worker``: the process group (gloo) is set up; train this worker's shard.

    Rank 0 returns its result as ``torch.save`` bytes (Ray Train refuses tensors in a return value).
    """
    if os.path.isdir(job["cwd"]):
        os.chdir(job["cwd"])  # Ray Train starts workers in its own directory; relative paths in cfg are the driver's
    torch.set_num_threads(job["threads"])
    done = train_worker(job["cfg"], job["run_dir"], resume=job["resume"], stop_after_epoch=job["stop_after_epoch"],
                        tensorboard=job["tensorboard"], progress=job["progress"])
    if done is None:
        return None
    buf = io.BytesIO()
    torch.save(done, buf)
    return buf.getvalue()


# ---------------------------------------------------------------------- one worker
def _noise(K: int, M: int, B: int, H: int, generator: torch.Generator, agents: slice) -> Tensor | None:
    """The whole population's noise ``[K, M, B, H]``, drawn as one process draws it; this shard's slice of it."""
    if K == 0:
        return None
    return torch.randn((K, M, B, H), generator=generator)[:, agents].contiguous()


def _reduce_epoch(acc: _EpochAccumulator, shard: WorkerShard) -> None:
    """Turn a worker's sums over its agents into the sums over all agents that the epoch's row is made of."""
    acc.det = shard.gather(acc.det)
    acc.det_weighted = shard.gather(acc.det_weighted)
    # sample_regret sums per-batch means over the shard's samples; over all agents they weigh by shard size
    total = shard._total(torch.tensor(acc.sums["sample_regret"] * shard.size / shard.num_agents),
                         torch.tensor(float(acc.decisions)))
    acc.sums["sample_regret"], acc.decisions = float(total[0]), int(total[1])


def _open_run_dir(cfg: TrainConfig, out: Path | None, resume: bool) -> dict[str, Any] | None:
    """Rank 0: the run directory's checkpoint to resume from (checked as one process checks it), or None;
    then ``config.json`` (and a spec population's file record)."""
    if out is None:
        return None
    out.mkdir(parents=True, exist_ok=True)  # train_distributed's lock made it; a launcher of train_worker may not
    ckpt_path = out / "checkpoint.pt"
    ck = _open_checkpoint(cfg, ckpt_path, out) if ckpt_path.exists() and resume else None
    if ck is not None:
        log.info("resuming %s from epoch %d", out, int(ck["epoch"]) + 1)
    _record_config(cfg, out)
    return ck


def train_worker(cfg: TrainConfig, run_dir: str | Path | None, *, resume: bool = True,
                 stop_after_epoch: int | None = None, tensorboard: bool = True,
                 progress: bool = False) -> dict[str, Any] | None:
    """One worker's part of :func:`train_distributed`, in an initialised ``torch.distributed`` process group.

    Every rank runs this with the same arguments; rank 0 returns the trained model's
    ``state_dict``, the history, the selected epoch and the early-stop epoch, the
    others ``None``.  Ray Train's ``TorchTrainer`` calls it through
    :func:`_worker_main`; any launcher of a gloo process group can (the tests use
    ``torch.multiprocessing``).
    """
    rank, world = dist.get_rank(), dist.get_world_size()
    _set_threads()
    out = Path(run_dir) if run_dir is not None else None
    whole, rule = check_settings(cfg, world)
    agents = shard_ranges(whole.num_agents, world)[rank]
    pop = population_shard(whole, agents)
    shard = WorkerShard(agents, whole.num_agents, whole.per_agent_inputs, world)
    rule.shard = shard
    M, H = whole.num_agents, whole.horizon
    # rank 0 validates and selects; the others keep a selector only to load the checkpoint into
    val_pop = cfg.build_population("val") if rank == 0 and cfg.val_fraction > 0 and cfg.validate_every else None
    selector = _make_selector(cfg, val_pop) if rank == 0 else Selector("last")

    model, scale_start, opt, sched, gen = _build_model(cfg)
    history: list[dict[str, float]] = []
    start_epoch, saved_epoch, stopped_early = 1, None, None
    ck = _from_rank0(lambda: _open_run_dir(cfg, out, resume))  # one process reads, everybody restores
    if ck is not None:
        history, saved_epoch, stopped_early = _restore(ck, model, opt, sched, gen, rule, selector)
        start_epoch = saved_epoch + 1
    del ck
    # every rank builds the same model from the seed (and restores the same checkpoint): DDP checks and syncs it
    # once at start; buffers need no sync before each forward
    policy = _Policy(DistributedDataParallel(model, forward_sync_buffers=False))
    policy.ddp.register_comm_hook(None, _sum_hook)

    writer = None
    if rank == 0 and out is not None and tensorboard:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(out / "tb"), purge_step=start_epoch)
    loop = _EpochLoop(cfg, pop, rule, model, opt, sched, gen, scale_start, selector, val_pop, out, writer, history,
                      saved_epoch, stopped_early)

    def noise(batch: int) -> Tensor | None:
        return _noise(rule.rollout_samples, M, batch, H, gen, agents)

    def end_epoch(epoch: int, acc: _EpochAccumulator, lr: float, seconds: float) -> tuple[int | None, int | None]:
        """Rank 0: the epoch's row, validation, logs and checkpoint; returns (stopped_early, saved_epoch)."""
        row = loop.close(epoch, acc, lr, seconds)
        if progress:
            print(f"epoch {epoch}/{cfg.epochs}: loss {row['loss']:.4g}, mean_regret {row['mean_regret']:.4g}, "
                  f"{seconds:.1f} s ({world} workers)", file=sys.stderr, flush=True)
        return loop.stopped_early, loop.saved_epoch

    for epoch in range(start_epoch, cfg.epochs + 1):
        if loop.stopped_early is not None:  # a resumed run that patience had already stopped
            break
        t0 = time.perf_counter()
        lr = opt.param_groups[0]["lr"]
        acc = loop.batches(epoch, policy, noise)
        _reduce_epoch(acc, shard)  # the sums over this worker's agents -> over all agents
        seconds = time.perf_counter() - t0
        # rank 0 records the epoch; every rank learns whether patience stopped the run and the checkpoint's epoch
        loop.stopped_early, loop.saved_epoch = _from_rank0(lambda: end_epoch(epoch, acc, lr, seconds))  # noqa: B023
        if loop.stopped_early is not None or (stop_after_epoch is not None and epoch >= stop_after_epoch):
            break

    if writer is not None:
        writer.close()
    if rank != 0:
        return None
    selected = _finish(cfg, model, selector, history, loop.stopped_early, out)
    return {"model": model.state_dict(), "history": history, "selected_epoch": selected,
            "stopped_early": loop.stopped_early}
