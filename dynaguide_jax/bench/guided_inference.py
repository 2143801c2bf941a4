"""Guided-inference benchmark: prints JSON lines (never asserted in tests).

Setting (issue 2 / REFERENCE.md section 7): DinoV2 ViT-S/14 features at 224 px computed once per
call, the paper's 6-layer dynamics model (384 wide, 256 patches + proprio + action token), K = 20
positive goals, 10 DDIM steps, M = 4 repeats, horizon 16, action dim 7. Base policy: the
Gaussian-mixture stand-in (its epsilon costs next to nothing), so the figures measure the
guidance machinery, which dominates the cost of a guided chunk. Random weights.

Each row also says how the compiled program spends its time: ``kernels_per_iteration`` (device
kernels per guidance iteration, counted in the after-optimisation HLO, ``bench.hlo_stats``),
``achieved_tflop_s`` (the HLO's trip-weighted dot FLOPs over the time) and the floor the device
allows (``bench.roofline``: those FLOPs at peak, or the dynamics weights read twice per iteration at
HBM bandwidth; "n/a" on CPUs).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import time

import jax
import jax.numpy as jnp

from dynaguide_jax.bench.hlo_stats import compiled_stats, kernels_per_iteration
from dynaguide_jax.bench.roofline import floor_fields, params_bytes
from dynaguide_jax.bench.timing import environment, time_steps, timed
from dynaguide_jax.diffusion import DDIMSchedule
from dynaguide_jax.diffusion.sampler import _guided_sample_jit
from dynaguide_jax.dynamics import DynamicsConfig, init_dynamics
from dynaguide_jax.dynamics.model import flops_per_sample
from dynaguide_jax.encoders import DinoV2Config, init_dinov2
from dynaguide_jax.encoders.dinov2 import flops_per_image
from dynaguide_jax.guidance import DynaGuide, GoalSet
from dynaguide_jax.policy import line_prototypes, mixture_eps, mixture_params


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    batch_sizes: tuple[int, ...] = (1, 64)
    dtypes: tuple[str, ...] = ("float32", "bfloat16")
    repeats: int = 4
    num_goals: int = 20
    reps: int = 10
    unroll: tuple[int, ...] = (1,)  # loop unrolling of the step/repeat loops; >= 10 unrolls everything
    # "cudnn" rows: NVIDIA GPUs, bf16/fp16 only; "pallas" (kernels/flash_attention.py): NVIDIA GPUs
    attention: tuple[str, ...] = ("xla", "cudnn", "pallas")
    quick: bool = False
    preset: str = "paper"  # "small": tiny models, to check the pipeline in seconds
    stand_in: bool = dataclasses.field(default=True, metadata={
        "help": "time the guidance machinery with the Gaussian-mixture stand-in policy"})
    policy: bool = True  # also time the image diffusion policy (unguided chunk, training step)
    train_batch: int = 16
    precompute: tuple[str, ...] = dataclasses.field(
        default=("projections",), metadata={"help": "DynaGuide.precompute variants: none, projections, attention"})
    pallas: tuple[str, ...] = dataclasses.field(
        default=("off",), metadata={"help": "DynamicsConfig.pallas variants: off, on (GPU/TPU), interpret"})


def guidance_models(cfg: BenchConfig):
    """Encoder + dynamics configs/params and K random goals for the chosen preset."""
    if cfg.preset == "paper":
        enc_base, dyn_base, size = DinoV2Config.preset("vits14"), DynamicsConfig(), 224
    elif cfg.preset == "small":
        enc_base = DinoV2Config(hidden_size=64, num_layers=2, num_heads=4, pos_grid=4)
        dyn_base, size = DynamicsConfig.preset("small"), 56
    else:
        raise ValueError(f"preset must be 'paper' or 'small', got {cfg.preset!r}")
    enc_params = init_dinov2(enc_base, jax.random.key(0), size)
    dyn_params = init_dynamics(dyn_base, jax.random.key(1))
    feat = dyn_base.predicted_tokens * dyn_base.feature_dim
    goals = GoalSet.create(jax.random.normal(jax.random.key(2), (cfg.num_goals, feat)))
    return enc_base, dyn_base, size, enc_params, dyn_params, goals


def attention_variants(cfg: BenchConfig, dtype: str) -> list[str]:
    """The attention implementations that can run here for ``dtype`` (cuDNN: NVIDIA GPU, half precision;
    Pallas: compiled on NVIDIA GPUs, only interpreted on CPUs)."""
    platform = jax.devices()[0].platform
    ok = {"xla": True, "cudnn": platform == "gpu" and dtype in ("bfloat16", "float16"), "pallas": platform == "gpu"}
    return [a for a in cfg.attention if ok.get(a, True)]


def run_benchmark(cfg: BenchConfig, emit=print) -> list[dict]:
    schedule = DDIMSchedule()
    enc_base, dyn_base, size, enc_params, dyn_params, goals = guidance_models(cfg)
    policy = mixture_params(line_prototypes(4, 16, 7), schedule)
    env = environment()
    # each guidance evaluation = dynamics forward + backward to the actions only (no weight
    # gradients): 2x forward; plus the final metric and one encoder pass
    evals = cfg.repeats * schedule.num_inference_steps
    flop_chunk = flops_per_image(enc_base, size) + (2 * evals + 1) * flops_per_sample(dyn_base)
    params = {"dynamics": dyn_params, "encoder": enc_params, "goals": goals, "sigma": 30.0}
    results = []
    for dtype, b in itertools.product(cfg.dtypes, cfg.batch_sizes):
        imgs = jax.random.randint(jax.random.key(3), (b, 1, 200, 200, 3), 0, 256).astype(jnp.uint8)
        obs, cond = {"images": imgs, "proprio": jnp.zeros((b, 15))}, jnp.zeros((b, 1))
        reference = None  # the first guided variant's chunk: later variants report their difference
        for attention, unroll, precompute, pallas, guided in itertools.product(
                attention_variants(cfg, dtype), cfg.unroll, cfg.precompute, cfg.pallas, (True, False)):
            first = (cfg.attention[0], cfg.unroll[0], cfg.precompute[0], cfg.pallas[0])
            if not guided and (attention, unroll, precompute, pallas) != first:
                continue  # the unguided chunk has no attention: time it once
            guide = DynaGuide(dynamics=dyn_base.replace(dtype=dtype, attention=attention, pallas=pallas),
                              encoder=enc_base.replace(dtype=dtype, attention=attention), image_size=size,
                              precompute=precompute)
            g, gp, go = (guide, params, obs) if guided else (None, None, None)
            args = (mixture_eps, policy, cond, g, gp, go, jax.random.key(0), jnp.float32(1.5), None)
            static = dict(schedule=schedule, action_shape=(16, 7), repeats=cfg.repeats, mode="repeat", unroll=unroll)

            def call(seed=0):
                return _guided_sample_jit(*args[:6], jax.random.key(seed), *args[7:], **static).actions

            t0 = time.perf_counter()
            actions = jax.block_until_ready(call())
            compile_s = time.perf_counter() - t0
            reps = 1 if cfg.quick else cfg.reps
            sec = timed(call, reps)
            stats = compiled_stats(_guided_sample_jit, *args, **static)
            row = {"bench": "guided_chunk" if guided else "unguided_chunk", "batch": b, "dtype": dtype,
                   "latency_ms": round(sec * 1e3, 3), "chunks_per_s": round(b / sec, 2),
                   "compile_s": round(compile_s, 2), "repeats_M": cfg.repeats, "goals_K": cfg.num_goals,
                   "ddim_steps": schedule.num_inference_steps, "unroll": unroll, "timed_reps": reps,
                   "policy": "gaussian-mixture stand-in", "preset": cfg.preset,
                   **program_fields(stats, evals, sec), **env}
            if guided:
                row["attention"] = attention
                row["precompute"], row["pallas"] = precompute, pallas
                row["model_tflop_per_chunk"] = round(flop_chunk / 1e12, 4)
                row["model_tflop_s"] = round(flop_chunk * b / sec / 1e12, 3)
                # the dynamics weights are read for the forward and the backward of every evaluation
                weights = params_bytes(dyn_params, dtype) * (2 * evals + 1)
                row.update(floor_fields(env["device"], dtype, stats.dot_flops, weights, sec))
                if reference is None:
                    reference = actions
                else:
                    row["max_abs_diff_vs_first_variant"] = float(jnp.max(jnp.abs(actions - reference)))
            results.append(row)
            emit(json.dumps(row))
    return results


def program_fields(stats, iterations: int, sec: float) -> dict:
    """Row fields from a compiled program's HLO (``hlo_stats``): kernels per guidance iteration and FLOP rate."""
    return {"kernels_per_iteration": round(kernels_per_iteration(stats, iterations), 1),
            "kernels_innermost_loop_body": stats.innermost_body_kernels,
            "hlo_tflop_per_chunk": round(stats.dot_flops / 1e12, 4),
            "achieved_tflop_s": round(stats.dot_flops / sec / 1e12, 4)}


def run_policy_benchmark(cfg: BenchConfig, emit=print) -> list[dict]:
    """The robomimic-style policy alone: unguided 10-step chunk (encoder once + 10 UNet calls)
    and training throughput (samples/s) at ``train_batch``, fp32 and bf16 compute."""
    from dynaguide_jax.diffusion.schedule import DDIMSchedule as Schedule
    from dynaguide_jax.policy import DiffusionPolicy, PolicyConfig
    from dynaguide_jax.policy.train import make_train_step
    from dynaguide_jax.training import EMAConfig, warmup_cosine_adamw

    schedule, env, rows = Schedule(), environment(), []
    base = PolicyConfig.preset("paper" if cfg.preset == "paper" else "small")
    params = DiffusionPolicy(base).init(jax.random.key(0))
    enc_base, dyn_base, size, enc_params, dyn_params, goals = guidance_models(cfg)
    gparams = {"dynamics": dyn_params, "encoder": enc_params, "goals": goals, "sigma": 30.0}
    for dtype in cfg.dtypes:
        policy = DiffusionPolicy(base.replace(dtype=dtype))
        for b in cfg.batch_sizes:
            obs, _, _ = policy.dummy_inputs(b)

            guide = DynaGuide(dynamics=dyn_base.replace(dtype=dtype), encoder=enc_base.replace(dtype=dtype),
                              image_size=size)
            gobs = {"images": obs[base.rgb_keys[-1]][:, -1:], "proprio": jnp.zeros((b, dyn_base.proprio_dim))}
            for guided, repeats in ((False, 1), (True, cfg.repeats)):
                g = (guide, gparams, gobs) if guided else (None, None, None)

                def chunk(params, obs, key, g=g, repeats=repeats):
                    cond = policy.encode_obs(params, obs)
                    return _guided_sample_jit(policy.eps_fn, params, cond, *g, key, jnp.float32(1.5), None,
                                              schedule=schedule,
                                              action_shape=(base.prediction_horizon, base.action_dim),
                                              repeats=repeats, mode="repeat", unroll=cfg.unroll[0]).actions

                chunk = jax.jit(chunk)
                t0 = time.perf_counter()
                jax.block_until_ready(chunk(params, obs, jax.random.key(0)))
                compile_s = time.perf_counter() - t0
                reps = 1 if cfg.quick else cfg.reps
                sec = timed(lambda: chunk(params, obs, jax.random.key(1)), reps)
                stats = compiled_stats(chunk, params, obs, jax.random.key(0))
                rows.append({"bench": "policy_guided_chunk" if guided else "policy_unguided_chunk", "batch": b,
                             "dtype": dtype, "latency_ms": round(sec * 1e3, 3), "chunks_per_s": round(b / sec, 2),
                             "compile_s": round(compile_s, 2), "timed_reps": reps, "repeats_M": repeats,
                             "policy": f"robomimic UNet {list(base.down_dims)}, "
                                       f"ResNet18-GN x{len(base.rgb_keys)} cameras",
                             "preset": cfg.preset,
                             **program_fields(stats, repeats * schedule.num_inference_steps, sec), **env})
                emit(json.dumps(rows[-1]))
        opt, _ = warmup_cosine_adamw(1e-4, 1000)
        step = make_train_step(policy, schedule, opt, EMAConfig())
        obs, _, actions = policy.dummy_inputs(cfg.train_batch)
        batch = {"obs": obs, "actions": actions}

        def fresh():
            p = jax.tree.map(jnp.copy, params)
            return {"params": p, "opt_state": opt.init(p), "ema": jax.tree.map(jnp.copy, p),
                    "step": jnp.zeros((), jnp.int32)}

        state = fresh()

        def one_step(i):
            nonlocal state
            state, loss = step(state, batch, jax.random.key(i))
            return loss

        n = 1 if cfg.quick else max(2, cfg.reps // 2)
        compile_s, sec = time_steps(step, one_step, n)
        rows.append({"bench": "policy_train_step", "batch": cfg.train_batch, "dtype": dtype,
                     "step_ms": round(sec * 1e3, 2), "samples_per_s": round(cfg.train_batch / sec, 2),
                     "compile_s": round(compile_s, 2), "timed_reps": n, "preset": cfg.preset, **env})
        emit(json.dumps(rows[-1]))
    return rows


__all__ = ["BenchConfig", "program_fields", "run_benchmark", "run_policy_benchmark"]
