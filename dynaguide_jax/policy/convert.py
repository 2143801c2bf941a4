"""robomimic diffusion-policy checkpoints (``.pth``) -> ``PolicyConfig`` + Flax params.

The file holds ``model`` (``nets``: the ModuleDict state dict; ``ema``: diffusers' EMAModel state
whose ``shadow_params`` list follows ``nets.parameters()`` order), ``config`` (a JSON string) and
``shape_metadata``. By default the weights are those robomimic's inference uses (see
``select_weights``). The UNet is built with ConditionalUnet1D's defaults, not the config's
``algo.unet`` block, so its sizes are read from the weights. Buffers (SpatialSoftmax
``pos_x``/``pos_y``/``temperature``) are checked, not learned.

Validation happens before any conversion, each failure naming the file: the algorithm
(``algo_name`` 'diffusion_policy' with ``model['nets']``), the key set of ``model['nets']`` against
the architecture's (missing and unexpected keys), every tensor's shape against the one the Flax
model needs (``torch_shapes``), then the EMA ``shadow_params`` (count and each tensor's shape,
matched to the parameter names by order).
"""
from __future__ import annotations

import json
import re
from typing import Mapping, NamedTuple

import numpy as np

from dynaguide_jax.diffusion.schedule import DDIMSchedule
from dynaguide_jax.policy.config import PolicyConfig
from dynaguide_jax.policy.obs_encoder import keypoint_grid
from dynaguide_jax.torch_io import as_float32, check_keys, load_torch_file, tensors_to_numpy

UNET = "policy.noise_pred_net."
BUFFER_SUFFIXES = ("pos_x", "pos_y", "temperature", "running_mean", "running_var", "num_batches_tracked")
WEIGHTS = ("robomimic", "ema", "train")


class RobomimicPolicy(NamedTuple):
    config: PolicyConfig
    params: dict
    schedule: DDIMSchedule
    action_stats: dict | None  # {"scale", "offset"} for unnormalising actions, or None
    weights: str  # the set used: "robomimic" (EMA noise net, trained encoders), "ema" or "train"


class _KeyProbe(dict):
    """A stand-in state dict holding only key names: converting it gives, at every Flax leaf, the
    ``(torch key, axis permutation)`` it comes from (see ``torch_shapes``)."""


def _take(s, key: str, perm: tuple | None = None):
    """``s[key]`` with its axes permuted (torch layout -> Flax layout); ``(key, perm)`` for a probe."""
    if isinstance(s, _KeyProbe):
        return key, perm
    return s[key] if perm is None else np.ascontiguousarray(s[key].transpose(perm))


def _with_bias(s, name, perm):
    p = {"kernel": _take(s, f"{name}.weight", perm)}
    if f"{name}.bias" in s:
        p["bias"] = _take(s, f"{name}.bias")
    return p


def conv1d(s, name):
    return _with_bias(s, name, (2, 1, 0))


def conv2d(s, name):
    return _with_bias(s, name, (2, 3, 1, 0))


def linear(s, name):
    """torch ``Linear`` ``name.weight [out, in]`` / ``name.bias`` -> Flax Dense params."""
    return _with_bias(s, name, (1, 0))


def group_norm(s, name):
    return {"scale": _take(s, f"{name}.weight"), "bias": _take(s, f"{name}.bias")}


def _res_block(s, p):
    out = {"block0": {"conv": conv1d(s, p + "blocks.0.block.0"), "norm": group_norm(s, p + "blocks.0.block.1")},
           "block1": {"conv": conv1d(s, p + "blocks.1.block.0"), "norm": group_norm(s, p + "blocks.1.block.1")},
           "cond_encoder": linear(s, p + "cond_encoder.1")}
    if p + "residual_conv.weight" in s:
        out["residual_conv"] = conv1d(s, p + "residual_conv")
    return out


def unet_sizes(s, source: str = "state dict") -> dict:
    """UNet sizes read from a few weight shapes (robomimic ignores the config's ``algo.unet``)."""
    def shape(key, ndim):
        if key not in s:
            raise KeyError(f"{source}: not a robomimic ConditionalUnet1D policy (missing {key})")
        if s[key].ndim != ndim:
            raise ValueError(f"{source}: {key}: expected a {ndim}-d tensor, found shape {tuple(s[key].shape)}")
        return s[key].shape

    first_conv = re.escape(UNET) + r"down_modules\.(\d+)\.0\.blocks\.0\.block\.0\.weight$"
    downs = [int(m.group(1)) for k in s if (m := re.match(first_conv, k))]
    first = shape(f"{UNET}down_modules.0.0.blocks.0.block.0.weight", 3)
    down_dims = tuple(shape(f"{UNET}down_modules.{i}.0.blocks.0.block.0.weight", 3)[0]
                      for i in range(max(downs) + 1))
    return {"down_dims": down_dims, "kernel_size": first[2], "action_dim": first[1],
            "step_embed_dim": shape(UNET + "diffusion_step_encoder.3.weight", 2)[0],
            "cond_total": shape(UNET + "mid_modules.0.cond_encoder.1.weight", 2)[1]}


def unet_params(s, n_down: int) -> dict:
    p = {"step_fc1": linear(s, UNET + "diffusion_step_encoder.1"),
         "step_fc2": linear(s, UNET + "diffusion_step_encoder.3"),
         "final_block": {"conv": conv1d(s, UNET + "final_conv.0.block.0"),
                         "norm": group_norm(s, UNET + "final_conv.0.block.1")},
         "final_conv": conv1d(s, UNET + "final_conv.1")}
    for i in range(n_down):
        for j in range(2):
            p[f"down{i}_res{j}"] = _res_block(s, f"{UNET}down_modules.{i}.{j}.")
        if i < n_down - 1:
            p[f"down{i}_downsample"] = conv1d(s, f"{UNET}down_modules.{i}.2.conv")
    for i in range(2):
        p[f"mid{i}"] = _res_block(s, f"{UNET}mid_modules.{i}.")
    for i in range(n_down - 1):
        for j in range(2):
            p[f"up{i}_res{j}"] = _res_block(s, f"{UNET}up_modules.{i}.{j}.")
        # torch ConvTranspose1d [in, out, k]
        p[f"up{i}_upsample"] = {"kernel": _take(s, f"{UNET}up_modules.{i}.2.conv.weight", (2, 0, 1)),
                                "bias": _take(s, f"{UNET}up_modules.{i}.2.conv.bias")}
    return p


def visual_core_params(s, prefix: str, num_stages: int = 4) -> dict:
    bb = prefix + "backbone.nets."
    backbone = {"conv1": conv2d(s, bb + "0"), "bn1": group_norm(s, bb + "1")}
    for i in range(num_stages):
        for j in range(2):
            b = f"{bb}{4 + i}.{j}."
            block = {"conv1": conv2d(s, b + "conv1"), "bn1": group_norm(s, b + "bn1"),
                     "conv2": conv2d(s, b + "conv2"), "bn2": group_norm(s, b + "bn2")}
            if b + "downsample.0.weight" in s:
                block["downsample_conv"] = conv2d(s, b + "downsample.0")
                block["downsample_bn"] = group_norm(s, b + "downsample.1")
            backbone[f"layer{i + 1}_{j}"] = block
    return {"backbone": backbone, "pool": {"keypoints": conv2d(s, prefix + "pool.nets")},
            "linear": linear(s, prefix + "nets.3")}


def parameter_keys(nets: Mapping) -> list[str]:
    """``nets.parameters()`` order: state-dict order without buffers and without the aliases a
    shared module leaves in the state dict."""
    keys = []
    for k in nets:
        if k.endswith(BUFFER_SUFFIXES):
            continue
        if re.search(r"\.obs_nets\.[^.]+\.nets\.[01]\.", k):  # VisualCore.nets aliases backbone/pool
            continue
        keys.append(k)
    return keys


def apply_ema(nets: dict[str, np.ndarray], shadow: list[np.ndarray], source: str = "checkpoint",
              shapes: Mapping[str, tuple] | None = None) -> dict[str, np.ndarray]:
    """Replace trainable parameters by ``shadow_params``, matched to names by order (robomimic
    keeps no names for them); every tensor's shape must be its parameter's (``shapes``: the
    architecture's, default the shapes in ``nets``)."""
    keys = parameter_keys(nets)
    want = [tuple(shapes[k]) if shapes is not None and k in shapes else tuple(nets[k].shape) for k in keys]
    got = [tuple(v.shape) for v in shadow]
    where = f"{source}: model['ema']['shadow_params']"
    if len(keys) != len(shadow):
        n, m = len(shadow), len(keys)
        i = next((i for i, (w, g) in enumerate(zip(want, got)) if w != g), min(n, m))
        head = (f"{where} holds {n} tensors but model['nets'] has {m} parameters "
                f"({abs(n - m)} {'unexpected' if n > m else 'missing'}); matched by order, ")
        if i == min(n, m) and n > m:
            tail = f"the unexpected tensor(s) follow the last parameter, from #{i} (shape {got[i]})"
        elif i == min(n, m):
            lacking = [f"{k} {w}" for k, w in zip(keys[i:i + 3], want[i:i + 3])]
            tail = f"the list ends at #{i}; parameters without a tensor: {', '.join(lacking)}" + (
                " ..." if m > i + 3 else "")
        else:
            tail = (f"shapes first disagree at #{i}, where {keys[i]} {want[i]} is expected and the tensor has shape "
                    f"{got[i]} (the {'unexpected' if n > m else 'missing'} tensor is at or before it)")
        raise ValueError(head + tail)
    bad = [f"#{i} ({k}): expected {w}, found {g}" for i, (k, w, g) in enumerate(zip(keys, want, got)) if w != g]
    if bad:
        raise ValueError(f"{where}: {len(bad)} mis-shaped tensor(s): " + "; ".join(bad[:5])
                         + (" ..." if len(bad) > 5 else ""))
    out = dict(nets)
    out.update(zip(keys, shadow))
    return out


def _ema_tensors(shadow, source: str) -> list[np.ndarray]:
    out = []
    for i, t in enumerate(shadow):
        if not hasattr(t, "detach"):
            raise ValueError(f"{source}: model['ema']['shadow_params'][{i}] is a {type(t).__name__}, not a tensor")
        out.append(np.asarray(t.detach().cpu().float().numpy()))
    return out


def select_weights(nets: dict, ema: dict | None, weights: str, ema_enabled: bool, source: str,
                   shapes: Mapping[str, tuple] | None = None):
    """The state dict to convert and the name of its weight set.

    robomimic's inference (robomimic/algo/diffusion_policy.py, ``_get_action_trajectory`` and its
    guided variants) copies the EMA weights into ``self._shadow_nets`` and predicts noise with them,
    but encodes observations and goals with ``self.nets["policy"]["obs_encoder"]``, the trained
    weights; without EMA (``algo.ema.enabled`` false) it uses ``self.nets`` throughout. "robomimic"
    does exactly that, "ema" takes the EMA weights everywhere, "train" never takes them.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    if weights == "train" or (weights == "robomimic" and not ema_enabled):
        return nets, "train"
    shadow = ema.get("shadow_params") if isinstance(ema, Mapping) else None
    if not shadow:
        why = "its config enables EMA (algo.ema.enabled) but " if weights == "robomimic" else ""
        raise ValueError(f"{source}: weights={weights!r} needs EMA weights, but {why}model['ema'] has no "
                         "shadow_params; weights='train' loads the trained weights")
    averaged = apply_ema(nets, _ema_tensors(shadow, source), source, shapes)
    if weights == "ema":
        return averaged, "ema"
    return {k: averaged[k] if k.startswith(UNET) else v for k, v in nets.items()}, "robomimic"


def _json_config(ckpt: dict, source: str = "checkpoint") -> dict:
    raw = ckpt.get("config")
    try:
        cfg = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as e:
        raise ValueError(f"{source}: 'config' is not valid JSON ({e})") from None
    if not isinstance(cfg, dict) or "algo" not in cfg or "observation" not in cfg:
        raise ValueError(f"{source}: checkpoint 'config' must be robomimic's JSON config with 'algo' and "
                         "'observation'")
    return cfg


def _config_from(ckpt: dict, sizes: dict, state, n_groups: int,
                 source: str = "checkpoint") -> tuple[PolicyConfig, DDIMSchedule]:
    try:
        return _parse_config(ckpt, sizes, state, n_groups)
    except (KeyError, TypeError, IndexError) as e:  # malformed config / shape_metadata entries
        what = e.args[0] if isinstance(e, KeyError) and e.args else e
        raise ValueError(f"{source}: robomimic 'config' or 'shape_metadata' is malformed "
                         f"({type(e).__name__}: {what!r})") from None


def _parse_config(ckpt: dict, sizes: dict, state, n_groups: int) -> tuple[PolicyConfig, DDIMSchedule]:
    cfg = _json_config(ckpt)
    algo, obs_cfg = cfg["algo"], cfg["observation"]
    shapes = ckpt["shape_metadata"]["all_shapes"]
    mods = obs_cfg["modalities"]["obs"]
    obs_keys = [k for k in shapes if any(k in mods.get(m, []) for m in mods)]
    rgb_names = set(mods.get("rgb", []))
    unsupported = [k for k in obs_keys if k not in rgb_names and k not in mods.get("low_dim", [])]
    if unsupported:
        raise ValueError(f"observation keys {unsupported} use modalities other than rgb/low_dim")
    goal_rgb = tuple(k for k in shapes if k in obs_cfg["modalities"].get("goal", {}).get("rgb", []))
    enc = obs_cfg["encoder"]["rgb"]
    core = enc.get("core_kwargs", {})
    if (core.get("backbone_class", "ResNet18Conv") != "ResNet18Conv"
            or core.get("pool_class", "SpatialSoftmax") != "SpatialSoftmax"):
        raise ValueError("only VisualCore(ResNet18Conv, SpatialSoftmax) image encoders are supported")
    crop = None
    if enc.get("obs_randomizer_class") == "CropRandomizer":
        kw = enc["obs_randomizer_kwargs"]
        crop = (int(kw["crop_height"]), int(kw["crop_width"]))
    widths = None
    if rgb_names:
        cam = next(k for k in obs_keys if k in rgb_names)
        pre = f"policy.obs_encoder.nets.obs.obs_nets.{cam}.backbone.nets."
        convs = [state.get(f"{pre}{4 + i}.0.conv1.weight") for i in range(4)]
        if all(c is not None and c.ndim == 4 for c in convs):  # else the key and shape checks name them
            widths = tuple(c.shape[0] for c in convs)
        temp = state.get(f"policy.obs_encoder.nets.obs.obs_nets.{cam}.pool.temperature")
        if temp is not None and not np.allclose(temp, core.get("pool_kwargs", {}).get("temperature", 1.0)):
            raise ValueError("SpatialSoftmax temperature in the weights differs from the config")
    horizon = algo["horizon"]
    config = PolicyConfig(
        action_dim=sizes["action_dim"], obs_keys=tuple(obs_keys),
        rgb_shapes=tuple((k, tuple(shapes[k][1:])) for k in shapes if k in rgb_names or k in goal_rgb),
        low_dim=tuple((k, int(np.prod(shapes[k]))) for k in obs_keys if k not in rgb_names),
        goal_rgb_keys=goal_rgb, obs_horizon=int(horizon["observation_horizon"]),
        prediction_horizon=int(horizon["prediction_horizon"]), action_horizon=int(horizon["action_horizon"]),
        down_dims=sizes["down_dims"], kernel_size=sizes["kernel_size"],
        n_groups=n_groups,
        step_embed_dim=sizes["step_embed_dim"], feature_dim=int(core.get("feature_dimension", 64)),
        num_keypoints=int(core.get("pool_kwargs", {}).get("num_kp", 32)),
        backbone_widths=widths or (64, 128, 256, 512), crop=crop,
    )
    if config.cond_dim + config.step_embed_dim != sizes["cond_total"]:
        raise ValueError(f"UNet condition size {sizes['cond_total']} does not match the observation encoder "
                         f"({config.cond_dim} + step embedding {config.step_embed_dim})")
    ddim = algo.get("ddim", {})
    if not ddim.get("enabled", True):
        raise ValueError("only DDIM-configured policies are supported (algo.ddim.enabled is false)")
    schedule = DDIMSchedule(
        num_train_timesteps=int(ddim.get("num_train_timesteps", 100)),
        num_inference_steps=int(ddim.get("num_inference_timesteps", 10)),
        beta_schedule=ddim.get("beta_schedule", "squaredcos_cap_v2"),
        clip_sample=bool(ddim.get("clip_sample", True)), set_alpha_to_one=bool(ddim.get("set_alpha_to_one", True)),
        steps_offset=int(ddim.get("steps_offset", 0)), prediction_type=ddim.get("prediction_type", "epsilon"))
    return config, schedule


def expected_keys(config: PolicyConfig) -> set[str]:
    """Every trainable key of a robomimic checkpoint for ``config`` (aliases and buffers aside)."""
    keys = set()

    def add(prefix, *names):
        for n in names:
            keys.update({f"{prefix}{n}.weight", f"{prefix}{n}.bias"})

    def res_block(prefix, residual):
        add(prefix, "blocks.0.block.0", "blocks.0.block.1", "blocks.1.block.0", "blocks.1.block.1", "cond_encoder.1")
        if residual:
            add(prefix, "residual_conv")

    dims = config.down_dims
    add(UNET, "diffusion_step_encoder.1", "diffusion_step_encoder.3", "final_conv.0.block.0",
        "final_conv.0.block.1", "final_conv.1")
    for i, d in enumerate(dims):
        res_block(f"{UNET}down_modules.{i}.0.", (config.action_dim if i == 0 else dims[i - 1]) != d)
        res_block(f"{UNET}down_modules.{i}.1.", False)
        if i < len(dims) - 1:
            add(f"{UNET}down_modules.{i}.2.", "conv")
    for i in range(2):
        res_block(f"{UNET}mid_modules.{i}.", False)
    for i, d in enumerate(reversed(dims[:-1])):
        res_block(f"{UNET}up_modules.{i}.0.", True)
        res_block(f"{UNET}up_modules.{i}.1.", False)
        add(f"{UNET}up_modules.{i}.2.", "conv")
    groups = [("obs", config.rgb_keys)] + ([("goal", config.goal_rgb_keys)] if config.goal_rgb_keys else [])
    for group, cams in groups:
        for cam in cams:
            p = f"policy.obs_encoder.nets.{group}.obs_nets.{cam}."
            keys.add(p + "backbone.nets.0.weight")
            add(p, "backbone.nets.1", "pool.nets", "nets.3")
            for i in range(len(config.backbone_widths)):
                for j in range(2):
                    b = f"{p}backbone.nets.{4 + i}.{j}."
                    keys.update({b + "conv1.weight", b + "conv2.weight"})
                    add(b, "bn1", "bn2")
                    if i > 0 and j == 0:
                        keys.add(b + "downsample.0.weight")
                        add(b, "downsample.1")
    return keys


def check_state(state: dict, config: PolicyConfig, source: str) -> None:
    """Missing / unexpected keys, then shapes against the Flax model's own parameter shapes."""
    groups = [("obs", config.rgb_keys)] + ([("goal", config.goal_rgb_keys)] if config.goal_rgb_keys else [])
    ignored = tuple(f"policy.obs_encoder.nets.{g}.obs_nets.{c}.{sub}" for g, cams in groups for c in cams
                    for sub in ("nets.0.", "nets.1.", "pool.pos_", "pool.temperature"))
    check_keys(expected_keys(config), state, source, ignored=ignored)


def torch_shapes(config: PolicyConfig) -> dict[str, tuple]:
    """The torch shape of every trainable key of ``expected_keys(config)``, from the shapes of the
    Flax model's parameters (``jax.eval_shape``, nothing allocated) through the conversion's own
    key mapping and axis permutations, so the two cannot disagree."""
    import jax

    from dynaguide_jax.policy.diffusion_policy import DiffusionPolicy

    want = jax.eval_shape(DiffusionPolicy(config).init, jax.random.key(0))
    src = _params_tree(_KeyProbe.fromkeys(expected_keys(config)), config)
    out, unmatched = {}, []

    def visit(w, p, path):
        for k in sorted(set(w) | set(p)):
            if k not in w or k not in p:
                unmatched.append(f"{path}{k}")
            elif isinstance(w[k], Mapping):
                visit(w[k], p[k], f"{path}{k}/")
            else:
                key, perm = p[k]
                shape = tuple(w[k].shape)
                if perm is None:
                    out[key] = shape
                else:  # flax = torch.transpose(perm): flax.shape[i] == torch.shape[perm[i]]
                    torch_shape = [0] * len(perm)
                    for i, axis in enumerate(perm):
                        torch_shape[axis] = shape[i]
                    out[key] = tuple(torch_shape)

    visit(want, src, "")
    if unmatched:  # the converter and the Flax model disagree: a bug here, not in the checkpoint
        raise AssertionError(f"Flax parameters without a checkpoint key or vice versa: {unmatched[:10]}")
    return out


def check_tensor_shapes(state: Mapping, shapes: Mapping[str, tuple], source: str) -> None:
    """Every tensor of ``state`` whose key is in ``shapes`` has that shape; else a ``ValueError``
    naming the first few keys with the expected and found shapes."""
    bad = [f"{k}: expected {tuple(shapes[k])}, found {tuple(v.shape)}" for k, v in state.items()
           if k in shapes and tuple(v.shape) != tuple(shapes[k])]
    if bad:
        raise ValueError(f"{source}: {len(bad)} tensor(s) do not fit the architecture: " + "; ".join(bad[:5])
                         + (" ..." if len(bad) > 5 else ""))


def _params_tree(state: Mapping, config: PolicyConfig) -> dict:
    params = {"noise_pred_net": unet_params(state, len(config.down_dims))}
    groups = [("obs", "obs_encoder", config.rgb_keys)]
    if config.goal_rgb_keys:
        groups.append(("goal", "goal_encoder", config.goal_rgb_keys))
    for group, name, cams in groups:
        params[name] = {cam: visual_core_params(state, f"policy.obs_encoder.nets.{group}.obs_nets.{cam}.")
                        for cam in cams}
    return params


def state_to_params(state: dict, config: PolicyConfig, source: str, checked: bool = False) -> dict:
    """Conversion to Flax params, checking the SpatialSoftmax grids and (unless ``checked``: the
    caller did) the key set and every tensor's shape."""
    if not checked:
        check_state(state, config, source)
        check_tensor_shapes(state, torch_shapes(config), source)
    params = _params_tree(state, config)
    groups = [("obs", config.rgb_keys)] + ([("goal", config.goal_rgb_keys)] if config.goal_rgb_keys else [])
    for group, cams in groups:
        for cam in cams:
            p = f"policy.obs_encoder.nets.{group}.obs_nets.{cam}.pool."
            if p + "pos_x" in state:
                h, w = config.keypoint_map(cam)
                gx, gy = keypoint_grid(h, w)
                if state[p + "pos_x"].size != gx.size or not np.allclose(state[p + "pos_x"].reshape(-1), gx):
                    raise ValueError(f"{source}: {p}pos_x does not match a {h}x{w} feature map for camera {cam!r}")
    return as_float32(params)


def load_robomimic_policy(path, weights: str = "robomimic", n_groups: int = 8) -> RobomimicPolicy:
    """Read a robomimic diffusion-policy checkpoint safely and convert it.

    ``weights``: "robomimic" (default: EMA noise-prediction net, trained observation and goal
    encoders, as robomimic's inference), "ema" (EMA everywhere) or "train" (no EMA); see
    ``select_weights``. ``n_groups`` is ConditionalUnet1D's GroupNorm group count, which robomimic
    leaves at its default of 8 and which the weights cannot reveal.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
    path = str(path)
    ckpt = load_torch_file(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path}: not a robomimic checkpoint (expected a dict with 'model', 'config', "
                         "'shape_metadata')")
    model = ckpt["model"]
    raw_cfg = ckpt.get("config")
    algo = ckpt.get("algo_name") or (json.loads(raw_cfg).get("algo_name") if _is_json_object(raw_cfg) else None)
    found = (f"model keys {sorted(map(str, model))[:5]}" if isinstance(model, Mapping) else
             f"model is a {type(model).__name__}")
    if algo not in (None, "diffusion_policy"):
        raise ValueError(f"{path}: algo {algo!r} is not a diffusion policy checkpoint (expected algo_name "
                         f"'diffusion_policy' with model['nets']; found {found})")
    if not isinstance(model, Mapping) or "nets" not in model:
        raise ValueError(f"{path}: not a robomimic diffusion policy checkpoint (expected algo_name "
                         f"'diffusion_policy' with model['nets']; found {found})")
    for k in ("config", "shape_metadata"):
        if k not in ckpt:
            raise ValueError(f"{path}: robomimic checkpoint lacks {k!r}")
    if not isinstance(ckpt["shape_metadata"], Mapping) or not isinstance(
            ckpt["shape_metadata"].get("all_shapes"), Mapping):
        raise ValueError(f"{path}: shape_metadata must be a dict with 'all_shapes' (observation key -> shape)")
    nets = tensors_to_numpy(model["nets"], f"{path}: model['nets']")
    ema_enabled = bool(_json_config(ckpt, path)["algo"].get("ema", {}).get("enabled", True))
    # every check runs on the trained weights before EMA is applied, so its messages name keys
    config, schedule = _config_from(ckpt, unet_sizes(nets, path), nets, n_groups, path)
    check_state(nets, config, f"{path}: model['nets']")
    shapes = torch_shapes(config)
    check_tensor_shapes(nets, shapes, f"{path}: model['nets']")
    nets, used = select_weights(nets, model.get("ema"), weights, ema_enabled, path, shapes)
    params = state_to_params(nets, config, path, checked=True)
    return RobomimicPolicy(config, params, schedule, _action_stats(ckpt, config.action_dim, path), used)


def _is_json_object(raw) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except (TypeError, ValueError):
        return False


def _action_stats(ckpt: dict, action_dim: int, source: str) -> dict | None:
    stats = ckpt.get("action_normalization_stats")
    if not stats:
        return None
    stats = tensors_to_numpy(stats, f"{source}: action_normalization_stats")
    out = {}
    for name in ("scale", "offset"):
        key = f"actions.{name}"
        if key not in stats:
            raise ValueError(f"{source}: action_normalization_stats lacks {key} (found {sorted(stats)[:5]})")
        out[name] = np.asarray(stats[key], np.float32)
        if out[name].size != action_dim:
            raise ValueError(f"{source}: action_normalization_stats {key} has shape {out[name].shape}, expected "
                             f"{action_dim} values (the policy's action size)")
    return out
