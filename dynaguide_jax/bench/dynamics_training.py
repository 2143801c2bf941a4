"""Dynamics-training throughput: cached DinoV2 features vs. encoding pixels in the step.

Prints JSON lines (samples/s, model TFLOP/s, MFU when the device's peak is known or given). The
"pixels" mode runs the frozen ViT on the current and future frame of every sample inside the
step, which is what training without the feature cache costs. Usage:
``python benchmarks/dynamics_training.py --help``.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import sys

import jax
import jax.numpy as jnp
import optax

from dynaguide_jax.bench.timing import environment, time_steps
from dynaguide_jax.dynamics import DynamicsConfig, dynamics_loss, init_dynamics
from dynaguide_jax.dynamics.model import flops_per_sample
from dynaguide_jax.encoders import DinoV2, DinoV2Config, init_dinov2, preprocess
from dynaguide_jax.encoders.dinov2 import flops_per_image
from dynaguide_jax.training.mesh import batch_sharding, make_mesh, replicated

# dense bf16 peaks per device (TFLOP/s), for model FLOP utilisation
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "TPU v4": 275.0, "TPU v5p": 459.0,
                    "TPU v5 lite": 197.0}


@dataclasses.dataclass(frozen=True)
class TrainBenchConfig:
    global_batch: tuple[int, ...] = (256,)  # one row per batch size (a sweep)
    modes: tuple[str, ...] = ("features", "pixels")
    dtypes: tuple[str, ...] = ("float32", "bfloat16")
    steps: int = 10
    # "torch": dropout on attention probabilities too, as torch's layer (explicit attention);
    # "fused": no attention-probability dropout, so attention is one fused kernel (cuDNN on NVIDIA GPUs in bf16);
    # "pallas": the dropout kept, inside this project's flash kernel (kernels/flash_attention.py; NVIDIA GPU rows
    # only: on CPUs Pallas only interprets)
    attention: tuple[str, ...] = ("torch", "fused", "pallas")
    preset: str = "paper"
    peak_tflops: float = 0.0  # per device; 0 = look up the device kind
    remat: tuple[bool, ...] = (False,)  # DynamicsConfig.remat variants (True: layers recomputed in the backward)


def peak_for(kind: str, given: float) -> float:
    if given > 0:
        return given
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k.lower() in kind.lower()), 0.0)


def run(cfg: TrainBenchConfig, emit=print) -> list[dict]:
    if cfg.preset == "paper":
        enc, dyn, size = DinoV2Config.preset("vits14"), DynamicsConfig(), 224
    else:
        enc = DinoV2Config(hidden_size=64, num_layers=2, num_heads=4, pos_grid=4)
        dyn, size = DynamicsConfig.preset("small"), 56
    mesh = make_mesh()
    env, rows = environment(), []
    peak = peak_for(env["device"], cfg.peak_tflops)
    enc_params = jax.device_put(init_dinov2(enc, jax.random.key(0), size), replicated(mesh))
    params = jax.device_put(init_dynamics(dyn, jax.random.key(1)), replicated(mesh))
    opt = optax.adam(1e-4)
    key = jax.random.key(2)
    for variant in cfg.attention:
        if variant not in ("torch", "fused", "pallas"):
            raise ValueError(f"attention variants are 'torch', 'fused' and 'pallas', got {variant!r}")
    for mode in cfg.modes:
        if mode not in ("features", "pixels"):
            raise ValueError(f"modes are 'features' and 'pixels', got {mode!r}")
    variants = cfg.attention
    if "pallas" in variants and env["platform"] != "gpu":
        print(f"pallas rows skipped: the kernel compiles for NVIDIA GPUs only (platform {env['platform']}; "
              "on CPUs it runs interpreted, a correctness mode, not a speed)", file=sys.stderr)
        variants = tuple(v for v in variants if v != "pallas")
    for b in cfg.global_batch:
        batches = _inputs(dyn, b, key, mesh, cfg.modes)
        for dtype, variant, mode, remat in itertools.product(cfg.dtypes, variants, cfg.modes, cfg.remat):
            kernel = "cudnn" if variant == "fused" and dtype != "float32" and env["platform"] == "gpu" else "xla"
            kernel = "pallas" if variant == "pallas" else kernel
            model = dyn.replace(dtype=dtype, attention=kernel, remat=remat,
                                attention_dropout=0.0 if variant == "fused" else None)
            encoder = DinoV2(enc.replace(dtype=dtype, attention=kernel))
            sec, compile_s = _time_step(model, encoder, enc_params, size, params, opt, batches[mode], mode, key, mesh,
                                        cfg.steps)
            # model FLOPs (forward + backward), not counting what remat recomputes: MFU's convention
            flop = 3 * flops_per_sample(dyn) + (2 * flops_per_image(enc, size) if mode == "pixels" else 0)
            tflops = b / sec * flop / 1e12
            row = {"bench": "dynamics_train_step", "input": mode, "dtype": dtype, "global_batch": b,
                   "variant": variant, "attention": kernel, "attention_dropout": model.attention_dropout_rate,
                   "remat": remat, "devices": mesh.devices.size, "step_ms": round(sec * 1e3, 2),
                   "samples_per_s": round(b / sec, 1), "model_tflop_s": round(tflops, 3),
                   "compile_s": round(compile_s, 2), "preset": cfg.preset, **env}
            if peak:
                row["mfu"] = round(tflops / (peak * mesh.devices.size), 4)
            rows.append(row)
            emit(json.dumps(row))
    return rows


def _inputs(dyn: DynamicsConfig, b: int, key, mesh, modes) -> dict:
    """Random global batches of ``b`` samples for each input mode in ``modes``, sharded over the mesh's batch
    axes."""
    n_img = dyn.num_cameras * dyn.patches_per_camera
    common = {"proprio": jnp.zeros((b, dyn.proprio_dim)), "actions": jnp.zeros((b, dyn.horizon, dyn.action_dim))}
    make = {
        "features": lambda: {"patches": jax.random.normal(key, (b, n_img, dyn.feature_dim)),
                             "future_patches": jax.random.normal(key, (b, n_img, dyn.feature_dim))},
        "pixels": lambda: {"image": jax.random.randint(key, (b, 200, 200, 3), 0, 256).astype(jnp.uint8),
                           "future_image": jax.random.randint(key, (b, 200, 200, 3), 0, 256).astype(jnp.uint8)},
    }
    return {mode: jax.device_put({**common, **make[mode]()}, batch_sharding(mesh)) for mode in modes}


def _time_step(model, encoder, enc_params, size, params, opt, batch, mode, key, mesh, steps) -> tuple[float, float]:
    """``(seconds per step, compile seconds)`` of an Adam step of ``model`` (the encoder inside for pixels)."""
    def step(params, opt_state, batch, key):
        if mode == "pixels":
            enc_fn = lambda im: encoder.apply({"params": enc_params}, preprocess(im, size))["patches"]  # noqa
            batch = {**batch, "patches": enc_fn(batch["image"]), "future_patches": enc_fn(batch["future_image"])}
        loss, g = jax.value_and_grad(lambda p: dynamics_loss(model, p, batch, key))(params)
        upd, opt_state = opt.update(g, opt_state)
        return optax.apply_updates(params, upd), opt_state, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    state = [jax.tree.map(jnp.copy, params), opt.init(params)]

    def one_step(i):
        with jax.set_mesh(mesh):  # as the trainer: a Pallas attention kernel splits the batch over the mesh
            state[0], state[1], loss = step(*state, batch, jax.random.fold_in(key, i))
        return loss

    compile_s, sec = time_steps(step, one_step, steps)
    return sec, compile_s
