"""DinoV2 weights from Hugging Face snapshots or torch-hub checkpoints -> Flax params.

Both layouts are first renamed to the torch-hub key names (``blocks.{i}.attn.qkv`` ...), then one
mapping builds the Flax tree. HF names of transformers 4.x (``attention.attention.query``,
``mlp.weights_in``) and 5.x (``attention.q_proj``, ``mlp.gate_proj``) are both accepted.
"""
from __future__ import annotations

import json
import math
import os
import re

import numpy as np

from dynaguide_jax import param_io
from dynaguide_jax.encoders.dinov2_config import DinoV2Config
from dynaguide_jax.torch_io import (
    as_float32, check_keys, layer_norm, linear, load_state_dict, split_qkv,
)

_HF_PREFIXES = ("dinov2.", "model.", "backbone.")
_HUB_IGNORED = ("mask_token", "head.", "dino_head.", "ibot_head.")


def _cat(state, names):
    return np.concatenate([state.pop(n) for n in names], axis=0)


def hf_to_hub_names(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename a HF ``Dinov2Model`` / ``Dinov2WithRegistersModel`` state dict to hub names."""
    s = {}
    for k, v in state.items():
        for prefix in _HF_PREFIXES:
            if k.startswith(prefix) and not k.startswith("embeddings"):
                k = k[len(prefix):]
        s[k] = v
    out: dict[str, np.ndarray] = {}
    simple = {
        "embeddings.cls_token": "cls_token",
        "embeddings.mask_token": "mask_token",
        "embeddings.position_embeddings": "pos_embed",
        "embeddings.register_tokens": "register_tokens",
        "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
        "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
        "layernorm.weight": "norm.weight",
        "layernorm.bias": "norm.bias",
    }
    for old, new in simple.items():
        if old in s:
            out[new] = s.pop(old)
    layers = sorted({int(m.group(1)) for k in s if (m := re.match(r"encoder\.layer\.(\d+)\.", k))})
    for i in layers:
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        for kind in ("weight", "bias"):
            for hf_q, hf_k, hf_v in (("attention.attention.query", "attention.attention.key",
                                      "attention.attention.value"),
                                     ("attention.q_proj", "attention.k_proj", "attention.v_proj")):
                names = [f"{src}{n}.{kind}" for n in (hf_q, hf_k, hf_v)]
                if all(n in s for n in names):
                    out[f"{dst}attn.qkv.{kind}"] = _cat(s, names)
            for hf, hub in (("attention.output.dense", "attn.proj"), ("attention.o_proj", "attn.proj"),
                            ("norm1", "norm1"), ("norm2", "norm2"), ("mlp.fc1", "mlp.fc1"),
                            ("mlp.fc2", "mlp.fc2"), ("mlp.weights_in", "mlp.w12"),
                            ("mlp.weights_out", "mlp.w3"), ("mlp.down_proj", "mlp.w3")):
                if f"{src}{hf}.{kind}" in s:
                    out[f"{dst}{hub}.{kind}"] = s.pop(f"{src}{hf}.{kind}")
            gate_up = [f"{src}mlp.gate_proj.{kind}", f"{src}mlp.up_proj.{kind}"]
            if all(n in s for n in gate_up):
                out[f"{dst}mlp.w12.{kind}"] = _cat(s, gate_up)
        for n in (1, 2):
            if f"{src}layer_scale{n}.lambda1" in s:
                out[f"{dst}ls{n}.gamma"] = s.pop(f"{src}layer_scale{n}.lambda1")
    out.update(s)  # leftovers are reported as unexpected by the converter
    return out


def _unchunk(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Training checkpoints nest blocks as ``blocks.{chunk}.{i}``; ``i`` is already global."""
    out = {}
    for k, v in state.items():
        m = re.match(r"blocks\.\d+\.(\d+)\.(.*)", k)
        out[f"blocks.{m.group(1)}.{m.group(2)}" if m else k] = v
    return out


def config_from_hub_state(state: dict[str, np.ndarray], num_heads: int | None = None,
                          source: str = "state dict") -> DinoV2Config:
    """Infer a ``DinoV2Config`` from hub-named weights (heads default to width / 64 as released).

    The MLP width must be the same in every block (and follow DinoV2's SwiGLU rule); the shapes of
    all other tensors are checked against the result by ``hub_state_to_params``."""
    for k in ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.norm1.weight"):
        if k not in state:
            raise KeyError(f"{source}: not a DinoV2 state dict: missing {k!r}")
    d = state["cls_token"].shape[-1]
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    grid = math.isqrt(state["pos_embed"].shape[1] - 1)
    swiglu = "blocks.0.mlp.w12.weight" in state
    regs = state["register_tokens"].shape[1] if "register_tokens" in state else 0
    fc = "w12" if swiglu else "fc1"
    widths = {}
    for i in range(depth):
        key = f"blocks.{i}.mlp.{fc}.weight"
        if key in state:  # a missing key is reported with all the others by hub_state_to_params
            widths[key] = tuple(state[key].shape)[0]
    if len(set(widths.values())) > 1:
        common = max(set(widths.values()), key=list(widths.values()).count)
        odd = {k: w for k, w in widths.items() if w != common}
        raise ValueError(f"{source}: MLP widths differ across blocks: {odd} (expected {common} like the other "
                         f"blocks); DinoV2 uses one mlp_ratio for every block, so the state dict is damaged")
    hidden = next(iter(widths.values()), 0)
    if swiglu:
        if hidden % 2:
            raise ValueError(f"{source}: blocks.0.mlp.w12.weight has {hidden} rows; a SwiGLU [gate; up] "
                             "projection needs an even number")
        hidden //= 2
        ratio = 4.0
    else:
        ratio = hidden / d
    cfg = DinoV2Config(
        hidden_size=d, num_layers=depth, num_heads=num_heads or max(d // 64, 1),
        patch_size=state["patch_embed.proj.weight"].shape[-1], mlp_ratio=ratio,
        use_swiglu=swiglu, num_registers=regs, pos_grid=grid,
        interpolate_offset=0.0 if regs else 0.1, interpolate_antialias=bool(regs),
    )
    if cfg.mlp_hidden != hidden:
        raise ValueError(f"{source}: blocks.0.mlp.{fc}.weight: MLP width {hidden} does not match DinoV2's "
                         f"{'SwiGLU ' if swiglu else ''}rule for hidden size {d} (expected {cfg.mlp_hidden})")
    return cfg


def expected_hub_shapes(cfg: DinoV2Config) -> dict[str, tuple[int, ...]]:
    """Every tensor of a hub-named DinoV2 state dict for ``cfg`` and its shape."""
    d, p, h = cfg.hidden_size, cfg.patch_size, cfg.mlp_hidden
    shapes = {"cls_token": (1, 1, d), "pos_embed": (1, 1 + cfg.pos_grid**2, d),
              "patch_embed.proj.weight": (d, 3, p, p), "patch_embed.proj.bias": (d,),
              "norm.weight": (d,), "norm.bias": (d,)}
    if cfg.num_registers:
        shapes["register_tokens"] = (1, cfg.num_registers, d)
    if cfg.use_swiglu:
        mlp = {"mlp.w12": (2 * h, d), "mlp.w3": (d, h)}
    else:
        mlp = {"mlp.fc1": (h, d), "mlp.fc2": (d, h)}
    layers = {"norm1": (d, d), "norm2": (d, d), "attn.qkv": (3 * d, d), "attn.proj": (d, d), **mlp}
    for i in range(cfg.num_layers):
        for m, (out, inp) in layers.items():
            w = (out,) if m.startswith("norm") else (out, inp)
            shapes[f"blocks.{i}.{m}.weight"], shapes[f"blocks.{i}.{m}.bias"] = w, (out,)
        shapes[f"blocks.{i}.ls1.gamma"] = shapes[f"blocks.{i}.ls2.gamma"] = (d,)
    return shapes


def expected_hub_keys(cfg: DinoV2Config) -> set[str]:
    return set(expected_hub_shapes(cfg))


def check_hub_shapes(state: dict[str, np.ndarray], cfg: DinoV2Config, source: str = "state dict") -> None:
    """Raise one ``ValueError`` naming ``source`` and every tensor whose shape does not fit ``cfg``."""
    bad = [f"{k}: expected {want}, got {tuple(state[k].shape)}"
           for k, want in expected_hub_shapes(cfg).items() if k in state and tuple(state[k].shape) != want]
    if bad:
        arch = (f"hidden_size={cfg.hidden_size}, num_layers={cfg.num_layers}, mlp_hidden={cfg.mlp_hidden}, "
                f"patch_size={cfg.patch_size}, pos_grid={cfg.pos_grid}, num_registers={cfg.num_registers}")
        raise ValueError(f"{source}: {len(bad)} tensor(s) do not fit the DinoV2 architecture ({arch}): "
                         + "; ".join(bad[:20]) + (" ..." if len(bad) > 20 else ""))


def hub_state_to_params(state: dict[str, np.ndarray], cfg: DinoV2Config, source: str = "state dict"):
    """Hub-named numpy state dict -> Flax params for ``DinoV2(cfg)``; strict about keys/shapes."""
    s = _unchunk(state)
    check_keys(expected_hub_keys(cfg), s, source, ignored=_HUB_IGNORED)
    check_hub_shapes(s, cfg, source)
    d = cfg.hidden_size
    params = {
        "cls_token": s["cls_token"].reshape(1, 1, d),
        "pos_embed": s["pos_embed"],
        "patch_embed": {"kernel": s["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
                        "bias": s["patch_embed.proj.bias"]},
        "norm": layer_norm(s, "norm"),
    }
    if cfg.num_registers:
        params["register_tokens"] = s["register_tokens"]
    for i in range(cfg.num_layers):
        b = f"blocks.{i}."
        attn = split_qkv(s[b + "attn.qkv.weight"], s[b + "attn.qkv.bias"])
        attn["out"] = linear(s, b + "attn.proj")
        mlp_names = ("w12", "w3") if cfg.use_swiglu else ("fc1", "fc2")
        mlp = {n: linear(s, f"{b}mlp.{n}") for n in mlp_names}
        params[f"blocks_{i}"] = {
            "norm1": layer_norm(s, b + "norm1"), "norm2": layer_norm(s, b + "norm2"),
            "attn": attn, "mlp": mlp,
            "ls1": {"gamma": s[b + "ls1.gamma"]}, "ls2": {"gamma": s[b + "ls2.gamma"]},
        }
    return as_float32(params)


def config_from_hf(hf: dict) -> DinoV2Config:
    """Translate a HF ``config.json`` of ``dinov2`` / ``dinov2_with_registers`` models."""
    kind = hf.get("model_type")
    if kind not in ("dinov2", "dinov2_with_registers"):
        raise ValueError(f"config.json model_type must be dinov2 or dinov2_with_registers, got {kind!r}")
    if not hf.get("use_swiglu_ffn", False) and hf.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"unsupported hidden_act {hf.get('hidden_act')!r} (DinoV2 uses gelu)")
    if not hf.get("qkv_bias", True):
        raise ValueError("qkv_bias=False is not a released DinoV2 configuration")
    patch = int(hf.get("patch_size", 14))
    return DinoV2Config(
        hidden_size=int(hf["hidden_size"]), num_layers=int(hf["num_hidden_layers"]),
        num_heads=int(hf["num_attention_heads"]), patch_size=patch,
        mlp_ratio=float(hf.get("mlp_ratio", 4)), use_swiglu=bool(hf.get("use_swiglu_ffn", False)),
        num_registers=int(hf.get("num_register_tokens", 0)) if kind != "dinov2" else 0,
        pos_grid=int(hf.get("image_size", 518)) // patch,
        layer_norm_eps=float(hf.get("layer_norm_eps", 1e-6)),
        interpolate_offset=0.0, interpolate_antialias=kind == "dinov2_with_registers",
    )


def load_hf_snapshot(directory: str) -> tuple[DinoV2Config, dict]:
    cfg_path = os.path.join(directory, "config.json")
    with open(cfg_path) as f:
        cfg = config_from_hf(json.load(f))
    for name in ("model.safetensors", "pytorch_model.bin"):
        weights = os.path.join(directory, name)
        if os.path.isfile(weights):
            break
    else:
        raise FileNotFoundError(f"{directory} has config.json but no model.safetensors or pytorch_model.bin")
    state = hf_to_hub_names(load_state_dict(weights))
    return cfg, hub_state_to_params(state, cfg, weights)


def load_hub_checkpoint(path: str, num_heads: int | None = None) -> tuple[DinoV2Config, dict]:
    state = load_state_dict(path)
    for wrapper in ("model", "teacher", "state_dict"):
        if "cls_token" not in state and any(k.startswith(wrapper + ".") for k in state):
            state = {k[len(wrapper) + 1:]: v for k, v in state.items() if k.startswith(wrapper + ".")}
            state = {k.removeprefix("backbone."): v for k, v in state.items()}
    state = _unchunk(state)
    cfg = config_from_hub_state(state, num_heads, path)
    return cfg, hub_state_to_params(state, cfg, path)


def load_dinov2(path: str | os.PathLike, num_heads: int | None = None) -> tuple[DinoV2Config, dict]:
    """``(config, params)`` from a HF snapshot directory, a torch-hub ``.pth`` file, or a directory
    written by ``save_dinov2`` / ``dynaguide convert dinov2``."""
    path = os.fspath(path)
    if os.path.isdir(path):
        if param_io.is_saved_params(path):
            meta, params = param_io.load_params(path)
            if meta.get("kind") != "dinov2":
                raise ValueError(f"{path} holds a {meta.get('kind')!r} checkpoint, not dinov2")
            cfg = DinoV2Config.from_json(json.dumps(meta["config"]))
            _check_saved_shapes(cfg, params, path)
            return cfg, params
        if os.path.isfile(os.path.join(path, "config.json")):
            return load_hf_snapshot(path)
        raise FileNotFoundError(f"{path}: neither a HF snapshot (config.json) nor a saved dynaguide checkpoint")
    if os.path.isfile(path):
        return load_hub_checkpoint(path, num_heads)
    raise FileNotFoundError(f"no DinoV2 weights at {path}")


def _check_saved_shapes(cfg: DinoV2Config, params, source: str) -> None:
    """A saved checkpoint's params must have exactly the shapes ``DinoV2(cfg)`` creates."""
    import jax

    from dynaguide_jax.encoders.dinov2 import init_dinov2

    size = cfg.patch_size * min(cfg.pos_grid, 2)
    want = jax.eval_shape(lambda: init_dinov2(cfg, jax.random.key(0), size))
    want = {jax.tree_util.keystr(k): tuple(v.shape) for k, v in jax.tree_util.tree_flatten_with_path(want)[0]}
    got = {jax.tree_util.keystr(k): tuple(np.shape(v)) for k, v in jax.tree_util.tree_flatten_with_path(params)[0]}
    bad = [f"{k}: expected {want.get(k, 'no such parameter')}, got {got.get(k, 'missing')}"
           for k in sorted(set(want) | set(got)) if want.get(k) != got.get(k)]
    if bad:
        raise ValueError(f"{source}: saved DinoV2 params do not fit the stored config: " + "; ".join(bad[:20]))


def save_dinov2(directory: str | os.PathLike, config: DinoV2Config, params) -> str:
    """Store converted params with orbax so conversion happens once."""
    return param_io.save_params(directory, params, {"kind": "dinov2", "config": json.loads(config.to_json())})
