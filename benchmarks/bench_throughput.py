"""Training throughput: our batched trainer against a per-sample loop reference and against SB3 PPO.

Three measurements on the EV population ``ev-similar`` (70 agents, H = 12),
medians over repeats, ratios taken in the same process:

(a) **Equitable loss + REINFORCE gradient** over 70 agents x 128 samples (the
    paper's Eq. 3/4 estimator, power form, q + 1 = 20): ours
    (:func:`trainers.estimators.estimate`, batched regret) against
    :func:`benchmarks.loop_reference.loop_reinforce_paper` (a Python loop over
    agents and samples, one top-k per instance, as the released code; the
    log-probabilities in one vectorised call).
    *Loss only*: the distribution parameters are leaf tensors (what the public
    model outputs for a real batch), so only sampling, regrets, the loss and
    its backward are timed; *with model*: the transformer's forward and
    backward are included on both sides.  The script asserts the two give the
    same regrets (1e-9) and the same gradient (1e-4 relative).
(b) **One whole training epoch** of :func:`trainers.training.train`
    (``reinforce_paper``, K = 1, batch 128, Adam, q + 1 = 2: see ``Q_EPOCH``) against
    :func:`benchmarks.loop_reference.loop_epoch` (same batches, same random
    draws, loop loss): the shared layout (6,109 clock positions, 48 batches) and
    the paper's chunked layout (88 positions, 1 batch).  Asserts the same
    per-batch losses.
(c) **Agent-decisions per second during training** (one decision = one agent
    scored on one prediction): our trainer (``reinforce_weighted`` loo K = 4, and
    ``reinforce_paper`` K = 1; shared layout, 20 batches) against SB3 on
    ``PublicModelEnv`` (shared layout, the benchmark harness's settings: gamma 0,
    observations/actions rescaled to [-1, 1]): PPO with one env (the default,
    n_steps 2048), PPO with 8 envs (``DummyVecEnv``, n_steps 256), A2C; plus the env
    alone with random actions (the ceiling of any algorithm using this env).

Whole run a few minutes on 2 shared cores, most of it the loop reference's
shared-layout epoch (timed once by default: ``--epoch-loop-repeats``).

    python benchmarks/bench_throughput.py [--quick] [--repeats 7] [--parts a b c]
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.distributions import Independent, Normal

from eq_envs.presets import build_population
from trainers.config import TrainConfig, default_model
from trainers.estimators import estimate
from trainers.networks import build_public_model
from trainers.training import population_regret_fn, train

sys.path.insert(0, str(Path(__file__).parent))
from timing import median_time  # noqa: E402  (benchmarks/timing.py)

POP, M, B, Q = "ev-similar", 70, 128, 19.0
#: q of the whole-epoch timing (b): at q + 1 = 20 the power form's gradient overflows float32 after the first Adam
#: step and the trainer's divergence guard stops the run; q + 1 = 2 keeps it finite, and q does not change the work.
Q_EPOCH = 1.0
LO, HI = np.float32(-1.0), np.float32(1.0)


def _load_loop_reference():
    spec = importlib.util.spec_from_file_location("loop_reference", Path(__file__).with_name("loop_reference.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules["loop_reference"] = mod
    spec.loader.exec_module(mod)
    return mod


loopref = _load_loop_reference()




class FixedDist:
    """A 'model' whose distribution is Normal(loc, scale) from leaf tensors (loss-only timing)."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor) -> None:
        self.loc, self.scale = loc, scale

    def distribution(self, x):
        return Independent(Normal(self.loc, self.scale, validate_args=False), 1)

    def parameters(self):
        return [self.loc, self.scale]


def _grads(params) -> torch.Tensor:
    return torch.cat([p.grad.reshape(-1).double() for p in params])


def _zero(params) -> None:
    for p in params:
        p.grad = None


def part_a(repeats: int, loop_repeats: int) -> list[tuple]:
    pop = build_population(POP, split="train", layout="shared")
    index = torch.arange(1000, 1000 + B)
    x = pop.observation(index)
    torch.manual_seed(0)
    model = build_public_model(default_model(POP))
    with torch.no_grad():
        d0 = model.distribution(x).base_dist
    loc = d0.loc.detach().clone().requires_grad_(True)
    scale = d0.scale.detach().clone().requires_grad_(True)
    regret_fn = population_regret_fn(pop, index)
    rows = []
    for label, target in (("loss only", FixedDist(loc, scale)), ("with model forward/backward", model)):
        params = list(target.parameters())

        def ours(est="reinforce_paper", target=target, params=params):
            _zero(params)
            g = torch.Generator().manual_seed(1)
            e = estimate(target, x, regret_fn, q=Q, estimator=est, num_agents=M, generator=g)
            e.surrogate.backward()
            return e

        def loop(target=target, params=params):
            _zero(params)
            g = torch.Generator().manual_seed(1)
            dist = target.distribution(x)
            base = dist.base_dist
            eps = torch.randn((1, M, *base.loc.shape), generator=g, dtype=base.loc.dtype)
            pred = (base.loc + base.scale * eps).detach()[0]
            return loopref.loop_reinforce_paper(dist, pop, index.tolist(), Q, pred)

        e = ours()
        g_ours = _grads(params)
        ref = loop()
        g_loop = _grads(params)
        reg_err = float(np.abs(e.regret[0].numpy() - ref["regret"]).max())
        assert reg_err < 1e-9, f"loop reference regrets differ from the fast path by {reg_err}"
        grad_err = float((g_ours - g_loop).norm() / g_ours.norm())
        assert grad_err < 1e-4, f"loop reference gradient differs from ours by {grad_err:.2e} (relative)"
        t_ours = median_time(ours, repeats)
        t_weighted = median_time(lambda: ours("reinforce_weighted"), repeats)
        t_loop = median_time(loop, loop_repeats, warmup=False)
        rows.append((label, t_ours, t_loop, t_weighted, reg_err, grad_err))
    return rows


def part_b(repeats: int, loop_repeats: int, quick: bool) -> list[tuple]:
    rows = []
    for layout in ("shared", "chunked"):
        pop = build_population(POP, split="train", layout=layout)
        max_batches = 4 if quick and layout == "shared" else None
        cfg = TrainConfig(population=POP, layout=layout, estimator="reinforce_paper", q=Q_EPOCH, epochs=1, seed=0,
                          max_batches=max_batches)
        hist = {}

        def ours(cfg=cfg, hist=hist):
            hist["ours"] = train(cfg, tensorboard=False).history[0]

        def loop(cfg=cfg, pop=pop, hist=hist):
            torch.manual_seed(cfg.seed)
            model = build_public_model(cfg.model_config)
            opt = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
            sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.lr_gamma)
            gen = torch.Generator().manual_seed(cfg.seed)
            hist["loop"] = loopref.loop_epoch(model, pop, opt, sched, gen, cfg.batch_size, cfg.q, cfg.max_batches)

        t_ours = median_time(ours, repeats)
        t_loop = median_time(loop, loop_repeats, warmup=False)
        f_loop = float(np.mean(hist["loop"]))
        err = abs(f_loop - hist["ours"]["eq_loss"]) / abs(hist["ours"]["eq_loss"])
        assert err < 1e-5, f"{layout}: loop epoch loss {f_loop:.6g} differs from the trainer's {hist['ours']['eq_loss']:.6g}"
        batches = len(hist["loop"])
        rows.append((layout, batches, pop.num_steps if max_batches is None else batches * B, t_ours, t_loop, err))
    return rows


def _sb3_env(seed: int = 0):
    from gymnasium.wrappers import RescaleAction, RescaleObservation

    from eq_envs.sb3_env import PublicModelEnv
    env = PublicModelEnv(POP, episode_length=24, layout="shared")
    env = RescaleAction(RescaleObservation(env, LO, HI), LO, HI)
    env.reset(seed=seed)
    return env


def part_c(repeats: int, quick: bool) -> list[tuple]:
    from stable_baselines3 import A2C, PPO
    from stable_baselines3.common.vec_env import DummyVecEnv
    rows = []
    nb = 5 if quick else 20
    for label, kw in (("ours reinforce_weighted (loo, K=4)",
                       dict(estimator="reinforce_weighted", baseline="loo", num_samples=4)),
                      ("ours reinforce_paper (K=1)", dict(estimator="reinforce_paper", num_samples=1))):
        cfg = TrainConfig(population=POP, layout="shared", q=Q, epochs=1, max_batches=nb, **kw)
        t = median_time(lambda cfg=cfg: train(cfg, tensorboard=False), repeats)
        rows.append((label, nb * B * M * kw["num_samples"], t))
    steps = 1024 if quick else 4096
    env = _sb3_env()

    def env_only():
        env.reset(seed=0)
        for _ in range(steps):
            _, _, _, trunc, _ = env.step(env.action_space.sample())
            if trunc:
                env.reset()

    rows.append(("env.step alone, random actions (ceiling)", steps * M, median_time(env_only, repeats)))
    sb3 = [("SB3 PPO, 1 env (n_steps 2048)", lambda: PPO("MlpPolicy", _sb3_env(), gamma=0.0, seed=0, device="cpu",
                                                         **({"n_steps": 256} if quick else {})), steps),
           ("SB3 PPO, 8 envs (DummyVecEnv, n_steps 256)",
            lambda: PPO("MlpPolicy", DummyVecEnv([lambda i=i: _sb3_env(i) for i in range(8)]), n_steps=256,
                        gamma=0.0, seed=0, device="cpu"), 2 * steps),
           ("SB3 A2C, 1 env (n_steps 5)", lambda: A2C("MlpPolicy", _sb3_env(), gamma=0.0, seed=0, device="cpu"),
            steps)]
    for label, make, n in sb3:
        times = []
        for r in range(repeats + 1):
            model = make()
            t0 = time.perf_counter()
            model.learn(total_timesteps=n)
            if r:  # the first one is a warm-up
                times.append(time.perf_counter() - t0)
        rows.append((label, model.num_timesteps * M, statistics.median(times)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer repeats and a 4-batch shared epoch (smoke run)")
    ap.add_argument("--repeats", type=int, help="repeats of the fast paths (median; default 7, --quick 2)")
    ap.add_argument("--loop-repeats", type=int, dest="loop_repeats",
                    help="repeats of the loop reference (default 3, --quick 1)")
    ap.add_argument("--epoch-loop-repeats", type=int, default=1, dest="epoch_loop_repeats",
                    help="repeats of the loop reference's whole epoch in (b) (default 1: ~2-3 min each)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    ap.add_argument("--parts", nargs="+", choices=("a", "b", "c"), default=["a", "b", "c"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("eq_envs.data").setLevel(logging.ERROR)
    repeats = args.repeats or (2 if args.quick else 7)
    loop_repeats = args.loop_repeats or (1 if args.quick else 3)
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible, "
          f"Python {platform.python_version()}, torch {torch.__version__} with {torch.get_num_threads()} thread(s); "
          f"{POP}, M={M}, H=12, q+1={Q + 1:g}; repeats: fast {repeats}, loop {loop_repeats}")
    if "a" in args.parts:
        print("\n(a) Equitable loss + REINFORCE gradient, 70 agents x 128 samples (paper's Eq. 3/4, power form)")
        print("| what is timed | ours (ms) | loop reference (ms) | ratio | ours reinforce_weighted (ms) "
              "| max regret diff | gradient rel. diff |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for label, t_o, t_l, t_w, re, ge in part_a(repeats, loop_repeats):
            print(f"| {label} | {t_o * 1e3:.2f} | {t_l * 1e3:,.0f} | {t_l / t_o:,.0f}x | {t_w * 1e3:.2f} "
                  f"| {re:.1e} | {ge:.1e} |")
    if "b" in args.parts:
        print(f"\n(b) One training epoch (reinforce_paper, K=1, batch 128, Adam, q+1={Q_EPOCH + 1:g}): trainer vs loop reference")
        print("| layout | batches | clock positions | ours (s) | loop reference (s) | ratio | loss rel. diff |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for layout, nb, n, t_o, t_l, err in part_b(repeats if not args.quick else 1, args.epoch_loop_repeats, args.quick):
            print(f"| {layout} | {nb} | {n:,} | {t_o:.2f} | {t_l:.1f} | {t_l / t_o:,.0f}x | {err:.1e} |")
    if "c" in args.parts:
        print("\n(c) Agent-decisions per second during training (ev-similar, shared layout)")
        rows = part_c(max(1, repeats // 2) if not args.quick else 1, args.quick)
        ref = {label: n / t for label, n, t in rows}
        ppo_best = max(v for k, v in ref.items() if "PPO" in k)
        print("| trainer | agent-decisions | wall (s, median) | decisions/s | ours weighted / this |")
        print("|---|---:|---:|---:|---:|")
        ours = ref["ours reinforce_weighted (loo, K=4)"]
        for label, n, t in rows:
            print(f"| {label} | {n:,} | {t:.2f} | {n / t:,.0f} | {ours / (n / t):.1f}x |")
        print(f"\nours reinforce_weighted vs the fastest SB3 PPO setting: {ours / ppo_best:.1f}x; "
              f"ours reinforce_paper vs it: {ref['ours reinforce_paper (K=1)'] / ppo_best:.1f}x")


if __name__ == "__main__":
    main()
