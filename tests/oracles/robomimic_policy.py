"""Torch oracle of robomimic's DiffusionPolicyUNet with robomimic's exact module and state-dict
names, re-implemented for the tests from the original's vendored robomimic (MaxDu17/DynaGuide
robomimic/robomimic: algo/diffusion_policy.py ``ConditionalUnet1D`` and ``DiffusionPolicyUNet``,
models/obs_nets.py ``ObservationGroupEncoder``, models/obs_core.py ``VisualCore``,
models/base_nets.py ``ResNet18Conv`` / ``SpatialSoftmax``), not copied. The inference path
(``DiffusionPolicyUNet._get_action_trajectory`` below) follows robomimic's line by line: EMA noise
net from ``_shadow_nets``, observations encoded by the trained ``nets``. Layout:

nets = ModuleDict(policy=ModuleDict(obs_encoder=ObservationGroupEncoder, noise_pred_net=ConditionalUnet1D))
ObservationGroupEncoder.nets[group] = ObservationEncoder(obs_nets=ModuleDict, obs_randomizers=ModuleDict)
VisualCore: backbone (ResNet18Conv: Sequential of torchvision resnet18 children[:-2], BatchNorm ->
GroupNorm(C // 16)), pool (SpatialSoftmax), nets = Sequential(backbone, pool, Flatten, Linear)
(the shared modules appear twice in the state dict), ReLU after each obs net.
"""
import copy
import json
import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# ---------------------------------------------------------------- ConditionalUnet1D


class SinusoidalPosEmb(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        half = self.dim // 2
        emb = torch.exp(torch.arange(half) * -(math.log(10000) / (half - 1)))
        emb = x[:, None] * emb[None, :]
        return torch.cat((emb.sin(), emb.cos()), dim=-1)


class Conv1dBlock(nn.Module):
    def __init__(self, inp, out, k, n_groups=8):
        super().__init__()
        self.block = nn.Sequential(nn.Conv1d(inp, out, k, padding=k // 2), nn.GroupNorm(n_groups, out), nn.Mish())

    def forward(self, x):
        return self.block(x)


class ConditionalResidualBlock1D(nn.Module):
    def __init__(self, inp, out, cond_dim, kernel_size=3, n_groups=8):
        super().__init__()
        self.blocks = nn.ModuleList([Conv1dBlock(inp, out, kernel_size, n_groups),
                                     Conv1dBlock(out, out, kernel_size, n_groups)])
        self.out_channels = out
        self.cond_encoder = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, out * 2), nn.Unflatten(-1, (-1, 1)))
        self.residual_conv = nn.Conv1d(inp, out, 1) if inp != out else nn.Identity()

    def forward(self, x, cond):
        out = self.blocks[0](x)
        embed = self.cond_encoder(cond).reshape(cond.shape[0], 2, self.out_channels, 1)
        out = embed[:, 0] * out + embed[:, 1]
        return self.blocks[1](out) + self.residual_conv(x)


class Downsample1d(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, 2, 1)

    def forward(self, x):
        return self.conv(x)


class Upsample1d(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.conv = nn.ConvTranspose1d(dim, dim, 4, 2, 1)

    def forward(self, x):
        return self.conv(x)


class ConditionalUnet1D(nn.Module):
    def __init__(self, input_dim, global_cond_dim, diffusion_step_embed_dim=256, down_dims=(256, 512, 1024),
                 kernel_size=5, n_groups=8):
        super().__init__()
        all_dims = [input_dim] + list(down_dims)
        d = diffusion_step_embed_dim
        cond_dim = d + global_cond_dim
        in_out = list(zip(all_dims[:-1], all_dims[1:]))
        blk = lambda i, o: ConditionalResidualBlock1D(i, o, cond_dim, kernel_size, n_groups)  # noqa: E731
        self.mid_modules = nn.ModuleList([blk(all_dims[-1], all_dims[-1]), blk(all_dims[-1], all_dims[-1])])
        diffusion_step_encoder = nn.Sequential(SinusoidalPosEmb(d), nn.Linear(d, d * 4), nn.Mish(),
                                               nn.Linear(d * 4, d))
        down = nn.ModuleList([])
        for ind, (di, do) in enumerate(in_out):
            last = ind >= len(in_out) - 1
            down.append(nn.ModuleList([blk(di, do), blk(do, do), Downsample1d(do) if not last else nn.Identity()]))
        up = nn.ModuleList([])
        for ind, (di, do) in enumerate(reversed(in_out[1:])):
            last = ind >= len(in_out) - 1
            up.append(nn.ModuleList([blk(do * 2, di), blk(di, di), Upsample1d(di) if not last else nn.Identity()]))
        final_conv = nn.Sequential(Conv1dBlock(down_dims[0], down_dims[0], kernel_size),
                                   nn.Conv1d(down_dims[0], input_dim, 1))
        self.diffusion_step_encoder = diffusion_step_encoder
        self.up_modules = up
        self.down_modules = down
        self.final_conv = final_conv

    def forward(self, sample, timestep, global_cond=None):
        x = sample.moveaxis(-1, -2)
        t = timestep if torch.is_tensor(timestep) else torch.tensor([timestep], dtype=torch.long)
        t = t.reshape(-1).expand(sample.shape[0])
        g = self.diffusion_step_encoder(t)
        if global_cond is not None:
            g = torch.cat([g, global_cond], axis=-1)
        h = []
        for resnet, resnet2, downsample in self.down_modules:
            x = resnet2(resnet(x, g), g)
            h.append(x)
            x = downsample(x)
        for mid in self.mid_modules:
            x = mid(x, g)
        for resnet, resnet2, upsample in self.up_modules:
            x = torch.cat((x, h.pop()), dim=1)
            x = upsample(resnet2(resnet(x, g), g))
        return self.final_conv(x).moveaxis(-1, -2)

# ---------------------------------------------------------------- observation encoder


class BasicBlock(nn.Module):
    def __init__(self, inp, out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, out, 3, stride, 1, bias=False)
        self.bn1 = nn.GroupNorm(out // 16, out)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
        self.bn2 = nn.GroupNorm(out // 16, out)
        self.downsample = None
        if stride != 1 or inp != out:
            self.downsample = nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=False), nn.GroupNorm(out // 16, out))

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet18Conv(nn.Module):
    def __init__(self, widths=(64, 128, 256, 512)):
        super().__init__()
        layers = [nn.Conv2d(3, widths[0], 7, 2, 3, bias=False), nn.GroupNorm(widths[0] // 16, widths[0]), nn.ReLU(),
                  nn.MaxPool2d(3, 2, 1)]
        inp = widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(inp, w, stride), BasicBlock(w, w, 1)))
            inp = w
        self.nets = nn.Sequential(*layers)

    def forward(self, x):
        return self.nets(x)


class SpatialSoftmax(nn.Module):
    def __init__(self, c, h, w, num_kp=32, temperature=1.0):
        super().__init__()
        self._h, self._w, self._num_kp = h, w, num_kp
        self.nets = nn.Conv2d(c, num_kp, kernel_size=1)
        self.register_buffer("temperature", torch.ones(1) * temperature)
        px, py = np.meshgrid(np.linspace(-1.0, 1.0, w), np.linspace(-1.0, 1.0, h))
        self.register_buffer("pos_x", torch.from_numpy(px.reshape(1, h * w)).float())
        self.register_buffer("pos_y", torch.from_numpy(py.reshape(1, h * w)).float())

    def forward(self, f):
        f = self.nets(f).reshape(-1, self._h * self._w)
        att = F.softmax(f / self.temperature, dim=-1)
        xy = torch.cat([torch.sum(self.pos_x * att, 1, keepdim=True), torch.sum(self.pos_y * att, 1, keepdim=True)], 1)
        return xy.view(-1, self._num_kp, 2)


class VisualCore(nn.Module):
    def __init__(self, hw, widths, num_kp, feature_dim):
        super().__init__()
        self.backbone = ResNet18Conv(widths)
        with torch.no_grad():
            fh, fw = self.backbone(torch.zeros(1, 3, *hw)).shape[-2:]
        self.pool = SpatialSoftmax(widths[-1], fh, fw, num_kp)
        self.nets = nn.Sequential(self.backbone, self.pool, nn.Flatten(1, -1), nn.Linear(num_kp * 2, feature_dim))

    def forward(self, x):
        return self.nets(x)


class ObservationEncoder(nn.Module):
    def __init__(self, shapes, rgb_keys, widths, num_kp, feature_dim):
        super().__init__()
        self.obs_shapes = shapes
        self.obs_nets = nn.ModuleDict()
        self.obs_randomizers = nn.ModuleDict()
        for k, s in shapes.items():
            self.obs_nets[k] = VisualCore(tuple(s[1:]), widths, num_kp, feature_dim) if k in rgb_keys else None
            self.obs_randomizers[k] = None
        self.activation = nn.ReLU()

    def forward(self, obs):
        feats = []
        for k in self.obs_shapes:
            x = obs[k]
            if self.obs_nets[k] is not None:
                x = self.activation(self.obs_nets[k](x))
            feats.append(x.reshape(x.shape[0], -1))
        return torch.cat(feats, dim=-1)


class ObservationGroupEncoder(nn.Module):
    def __init__(self, groups, rgb_keys, widths, num_kp, feature_dim):
        super().__init__()
        self.nets = nn.ModuleDict({g: ObservationEncoder(s, rgb_keys, widths, num_kp, feature_dim)
                                   for g, s in groups.items()})

    def forward(self, **inputs):
        return torch.cat([self.nets[g](inputs[g]) for g in self.nets], dim=-1)

# ---------------------------------------------------------------- policy and checkpoint


def build(shapes, rgb_keys, goal_keys=(), action_dim=7, to=2, down_dims=(32, 64, 128), dsed=32, kernel=5,
          widths=(16, 16, 32, 32), num_kp=8, feature_dim=16, seed=0):
    torch.manual_seed(seed)
    groups = OrderedDict(obs=OrderedDict(shapes))
    if goal_keys:
        groups["goal"] = OrderedDict((k, shapes[k]) for k in goal_keys)
    enc = ObservationGroupEncoder(groups, rgb_keys, widths, num_kp, feature_dim)
    obs_dim = sum(feature_dim if k in rgb_keys else int(np.prod(s)) for k, s in groups["obs"].items())
    goal_dim = feature_dim * len(goal_keys)
    unet = ConditionalUnet1D(action_dim, obs_dim * to + goal_dim, dsed, down_dims, kernel)
    nets = nn.ModuleDict({"policy": nn.ModuleDict({"obs_encoder": enc, "noise_pred_net": unet})})
    with torch.no_grad():  # non-trivial norms so the parity test sees them
        for name, p in nets.named_parameters():
            if ("bn" in name or "block.1" in name or ".nets.1." in name) and p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return nets.eval()


def encode(nets, obs, goal=None):
    """obs: {key: [B, To, ...]} (images float 0..1 CHW) -> [B, To*D (+ goal)] as robomimic does for
    obs. The goal ([B, ...]) is encoded once and appended: this project's layout, not robomimic's
    (whose ``time_distributed`` encodes a [B, To, ...] goal at every step)."""
    enc = nets["policy"]["obs_encoder"]
    first = next(iter(obs.values()))
    b, t = first.shape[:2]
    flat = {k: v.reshape(b * t, *v.shape[2:]) for k, v in obs.items()}
    feats = enc.nets["obs"](flat).reshape(b, -1)
    if goal is not None:
        feats = torch.cat([feats, enc.nets["goal"](goal)], dim=-1)
    return feats


def robomimic_config(obs_low, obs_rgb, goal_rgb=(), to=2, tp=16, ta=8, num_kp=8, feature_dim=16):
    return {
        "algo_name": "diffusion_policy",
        "algo": {"horizon": {"observation_horizon": to, "action_horizon": ta, "prediction_horizon": tp},
                 "unet": {"enabled": True, "diffusion_step_embed_dim": 256, "down_dims": [256, 512, 1024],
                          "kernel_size": 5, "n_groups": 8},
                 "ema": {"enabled": True, "power": 0.75},
                 "ddim": {"enabled": True, "num_train_timesteps": 100, "num_inference_timesteps": 10,
                          "beta_schedule": "squaredcos_cap_v2", "clip_sample": True, "set_alpha_to_one": True,
                          "steps_offset": 0, "prediction_type": "epsilon"}},
        "observation": {
            "modalities": {"obs": {"low_dim": list(obs_low), "rgb": list(obs_rgb), "depth": [], "scan": []},
                           "goal": {"low_dim": [], "rgb": list(goal_rgb), "depth": [], "scan": []}},
            "encoder": {"rgb": {"core_class": "VisualCore",
                                "core_kwargs": {"feature_dimension": feature_dim, "backbone_class": "ResNet18Conv",
                                                "backbone_kwargs": {"pretrained": False, "input_coord_conv": False},
                                                "pool_class": "SpatialSoftmax",
                                                "pool_kwargs": {"num_kp": num_kp, "learnable_temperature": False,
                                                                "temperature": 1.0, "noise_std": 0.0}},
                                "obs_randomizer_class": None,
                                "obs_randomizer_kwargs": {"crop_height": 212, "crop_width": 212}}}},
    }


def save_checkpoint(path, nets, shapes, config, ema_shift=0.05, action_dim=7):
    """robomimic layout: model{nets, ema{..., shadow_params}}, config (JSON string), shape_metadata."""
    g = torch.Generator().manual_seed(123)
    shadow = [(p.detach() + ema_shift * torch.randn(p.shape, generator=g)) for p in nets.parameters()]
    ema = {"decay": 0.999, "min_decay": 0.0, "optimization_step": 1000, "update_after_step": 0,
           "use_ema_warmup": True, "inv_gamma": 1.0, "power": 0.75, "shadow_params": shadow}
    ckpt = {"model": {"nets": nets.state_dict(), "ema": ema}, "config": json.dumps(config),
            "algo_name": "diffusion_policy", "env_metadata": {"env_name": "test", "type": 1, "env_kwargs": {}},
            "shape_metadata": {"all_shapes": OrderedDict((k, list(v)) for k, v in shapes.items()), "ac_dim": action_dim,
                               "all_obs_keys": list(shapes), "use_images": True}}
    torch.save(ckpt, path)
    return shadow


def time_distributed(inputs, op):
    """robomimic/utils/tensor_utils.py ``time_distributed(..., inputs_as_kwargs=True)``: [B, T, ...]
    leaves -> [B*T, ...] (None leaves pass), ``op(**inputs)``, -> [B, T, ...]."""
    first = next(v for g in inputs.values() if g is not None for v in g.values())
    batch_size, seq_len = first.shape[:2]
    joined = {g: None if d is None else {k: v.reshape(-1, *v.shape[2:]) for k, v in d.items()}
              for g, d in inputs.items()}
    outputs = op(**joined)
    return outputs.reshape(batch_size, seq_len, *outputs.shape[1:])


class DiffusionPolicyUNet:
    """Inference of robomimic/algo/diffusion_policy.py ``DiffusionPolicyUNet``: ``_create_networks``'
    nets / ``_shadow_nets`` / ``ema`` and scheduler, ``deserialize`` and ``_get_action_trajectory``,
    followed line by line. Departures: ``nets`` comes from ``build``, ``_get_action_trajectory``
    takes its initial noise instead of drawing ``torch.randn``, and ``all_ema=True`` (an extension,
    not robomimic) also encodes observations with the EMA copy."""

    def __init__(self, nets, config, obs_shapes):
        from diffusers import DDIMScheduler
        from diffusers.training_utils import EMAModel

        self.algo_config, self.obs_shapes = config["algo"], OrderedDict(obs_shapes)
        ema = None
        if self.algo_config["ema"]["enabled"]:
            ema = EMAModel(parameters=nets.parameters(), power=self.algo_config["ema"]["power"])
        self.nets = nets.eval()
        self._shadow_nets = copy.deepcopy(self.nets).eval()
        self._shadow_nets.requires_grad_(False)
        ddim = self.algo_config["ddim"]
        self.noise_scheduler = DDIMScheduler(
            num_train_timesteps=ddim["num_train_timesteps"], beta_schedule=ddim["beta_schedule"],
            clip_sample=ddim["clip_sample"], set_alpha_to_one=ddim["set_alpha_to_one"],
            steps_offset=ddim["steps_offset"], prediction_type=ddim["prediction_type"])
        self.ema = ema

    def deserialize(self, model_dict):
        self.nets.load_state_dict(model_dict["nets"])
        if model_dict.get("ema", None) is not None:
            self.ema.load_state_dict(model_dict["ema"])

    @torch.no_grad()
    def _get_action_trajectory(self, obs_dict, noise, goal_dict=None, all_ema=False):
        assert not self.nets.training
        To = self.algo_config["horizon"]["observation_horizon"]
        Ta = self.algo_config["horizon"]["action_horizon"]
        num_inference_timesteps = self.algo_config["ddim"]["num_inference_timesteps"]
        # select network
        nets = self.nets
        if self.ema is not None:
            self.ema.copy_to(parameters=self._shadow_nets.parameters())
            nets = self._shadow_nets
        # encode obs
        inputs = {"obs": obs_dict, "goal": goal_dict}
        for k in self.obs_shapes:
            if inputs["obs"][k].ndim - 1 == len(self.obs_shapes[k]):
                inputs["obs"][k] = torch.unsqueeze(inputs["obs"][k], dim=1)
            assert inputs["obs"][k].ndim - 2 == len(self.obs_shapes[k])
        encoder = (nets if all_ema else self.nets)["policy"]["obs_encoder"]
        obs_features = time_distributed(inputs, encoder)
        assert obs_features.ndim == 3  # [B, T, D]
        obs_cond = obs_features.flatten(start_dim=1)
        naction = noise
        self.noise_scheduler.set_timesteps(num_inference_timesteps)
        for k in self.noise_scheduler.timesteps:
            noise_pred = nets["policy"]["noise_pred_net"](sample=naction, timestep=k, global_cond=obs_cond)
            naction = self.noise_scheduler.step(model_output=noise_pred, timestep=k, sample=naction).prev_sample
        start = To - 1
        end = start + Ta
        return naction[:, start:end]


def load_algo(path, nets, config, obs_shapes):
    """robomimic's ``policy_from_checkpoint``: build the algo, then ``deserialize(ckpt["model"])``."""
    algo = DiffusionPolicyUNet(nets, config, obs_shapes)
    algo.deserialize(torch.load(path, weights_only=True)["model"])
    return algo
