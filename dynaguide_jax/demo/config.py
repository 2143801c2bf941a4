"""Settings of ``dynaguide demo``, the paper's ArticulatedParts experiment on the built-in world.

One frozen dataclass with three presets: ``tiny`` (CI: every stage and artefact, minutes),
``small`` (the default: CPU sizes, ~15 minutes on a 2-core CPU) and ``paper`` (CALVIN's image sizes, the
paper's model sizes, 100 rollouts per target and method: a GPU job). The evaluation settings come
from the original's articulated-parts script (paper_experiments/calvin_articulated_object.sh): its
switch and door_left runs' guidance (scale 1.5 with 4 repeats, sigma 30, applied as
``guidance.paper_scaled_sigma``: 7.5 for the small preset's 16 predicted patches) for every target (the
script tunes scale 1-2 and sigma 15-40 per target; ``dynaguide experiment articulated_parts`` uses those),
GPC best of 5, ITPS toward the target's part (the JSONs' ``loc_target``; its scale 1, not the script's 2-3),
one experiment JSON per target fixing the part's start. The small
preset trains the dynamics model with the original's ``--noised`` action augmentation (its CALVIN recipe
leaves it off, as the paper preset does).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json

PRESETS = ("tiny", "small", "paper")
RESNET_STAGES = 4  # residual stages of both policy models' ResNet18 (len(PolicyConfig.backbone_widths))
POLICY_OBS = ("state", "cameras")
# The 8 targets and the part each one's reset fixes (calvin_exp_configs_examples/<target>.json env_setup)
TARGET_SETUPS = {"button_on": {"green_light": 0}, "button_off": {"green_light": 1}, "switch_on": {"switch": 0},
                 "switch_off": {"switch": 0.085}, "drawer_open": {"drawer": 0}, "drawer_close": {"drawer": 0.16},
                 "door_left": {"sliding_door": 0}, "door_right": {"sliding_door": 0.28}}
# the robot's reset-pose list per target (orig: calvin_exp_configs_examples/<target>.json "reset_poses"); the
# goals stage picks the lists from the validation play as the original's script does (data/reset_poses.py)
TARGET_RESET_POSES = {t: "midpoint" if t in ("button_on", "button_off", "door_right") else "right_side_midpoint"
                      for t in TARGET_SETUPS}


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Every setting of the pipeline; ``stage_fields`` says which stage each one feeds."""

    preset: str = "small"
    seed: int = 0
    out_dir: str = "runs/demo"
    encoder: str | None = None  # DinoV2 weights (HF dir, hub .pth, converted dir); None: random ViT-S/14
    # play data (the world's CPU sizes unless paper)
    image_size: int = 64  # static camera; the gripper camera is half of it (CALVIN: 200 / 84)
    play_streams: int = 8
    play_steps: int = 2500
    validation_streams: int = 2
    block_play_weight: float = 0.25  # block behaviours' share of the play vs each articulated one (1 = alike)
    # recoveries: per step of an expert's approach, the chance that a push (4..10 steps) starts; the
    # recorded action is the expert's correction (envs/play.py; 0: none)
    play_perturb: float = 0.0
    # frozen encoder input (a multiple of 14)
    encoder_size: int = 56
    # policies: "state" = robot_obs + scene_obs (fast on CPU), "cameras" = both cameras + robot_obs (the original)
    policy_obs: str = dataclasses.field(default="state", metadata={"choices": POLICY_OBS})
    # standardise robot_obs / scene_obs with the play's statistics; the original (robomimic,
    # hdf5_normalize_obs false) feeds them raw, as the paper preset does. On the small preset it
    # raised the base policy's behaviour rate from 29 % to 48 % of rollouts (success 3 % -> 6 %).
    policy_obs_norm: bool = True
    policy_model: str = dataclasses.field(default="small", metadata={"choices": ("small", "paper")})
    # the noise UNet's channel widths; empty: policy_model's (small: 32 64, paper: 256 512 1024)
    policy_down_dims: tuple[int, ...] = ()
    # hidden widths of an MLP over robot_obs / scene_obs before the condition (PolicyConfig.low_dim_mlp);
    # empty: they enter as they are (robomimic's)
    policy_low_dim_mlp: tuple[int, ...] = ()
    policy_steps: int = 10000
    gc_steps: int = 3000
    # the GC policy's goal image side: the static frame box-filtered (a divisor of image_size) or pixels
    # repeated (a multiple); more than 32 px, or ResNet18's keypoint map is 1 x 1 and hides the goal
    gc_goal_size: int = 64
    policy_batch: int = 64
    policy_lr: float = 1e-3
    # dynamics model
    dynamics_model: str = dataclasses.field(default="small", metadata={"choices": ("small", "paper")})
    dynamics_steps: int = 2000
    dynamics_batch: int = 64
    dynamics_lr: float = 3e-4
    # the original's --noised augmentation (a growing share of chunks noised at Geometric(0.05) DDIM levels,
    # so the model has seen the noisy actions guidance differentiates at); its CALVIN recipe leaves it off
    dynamics_noised: bool = True
    # goal sets (the original's: keep 70 %, at most 20 per behaviour, from the validation split)
    keep_fraction: float = 0.7
    max_goals: int = 20
    # closed-loop evaluation
    rollouts: int = 24  # per target and method
    horizon: int = 168  # control steps per rollout (the original: 400)
    ddim_steps: int = 10
    scale: float = 1.5
    repeats: int = 4
    sigma: float = dataclasses.field(default=30.0, metadata={
        "help": "the metric's temperature on the original's scale (its --alpha, set for 256 x 384 predicted "
                "features), applied scaled to the dynamics model's (guidance.paper_scaled_sigma: 30 -> 7.5 for the "
                "small preset's 16 patches)"})
    gpc_samples: int = 5
    # ITPS toward the target's part (envs.expert.loc_target, the original's loc_target); the original's script
    # uses 2-3, which on this world did worse (scale 3: 20 %, 1: 37 % on the demo's models)
    itps_scale: float = 1.0
    methods: tuple[str, ...] = ("base", "dynaguide", "gc", "gpc", "itps")
    gifs: int = 2  # rollout GIFs per method (of the first target)

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {PRESETS}, got {self.preset!r}")
        if self.policy_obs not in POLICY_OBS:
            raise ValueError(f"policy_obs must be one of {POLICY_OBS}, got {self.policy_obs!r}")
        if self.encoder_size % 14:
            raise ValueError(f"encoder_size must be a multiple of 14 (DinoV2 patches), got {self.encoder_size}")
        if self.image_size < 16 or self.image_size % 2:
            raise ValueError(f"image_size must be an even number >= 16, got {self.image_size}")
        from dynaguide_jax.envs import tabletop_for_image_size
        from dynaguide_jax.policy.config import feature_map_side

        if self.gc_goal_size < 1 or (self.image_size % self.gc_goal_size and self.gc_goal_size % self.image_size):
            raise ValueError(f"gc_goal_size must divide image_size {self.image_size} or be a multiple of it, got "
                             f"{self.gc_goal_size}")
        cams = {"gc_goal_size": self.gc_goal_size}
        if self.policy_obs == "cameras":
            cams["the gripper camera"] = tabletop_for_image_size(self.image_size).gripper_size
        blind = [f"{name} {side}" for name, side in cams.items() if feature_map_side(side, RESNET_STAGES) == 1]
        if blind:
            raise ValueError(f"the policies' ResNet18 reduces {', '.join(blind)} px to a 1 x 1 keypoint map, which "
                             "is the same for every image: use more than 32 px")
        positive = ("play_streams", "play_steps", "policy_steps", "gc_steps", "policy_batch", "dynamics_steps",
                    "dynamics_batch", "max_goals", "rollouts", "horizon", "ddim_steps", "repeats", "gpc_samples")
        bad = [f"{n}={getattr(self, n)}" for n in positive if getattr(self, n) < 1]
        if bad:
            raise ValueError(f"these settings must be >= 1: {', '.join(bad)}")
        dims = self.policy_down_dims
        if len(dims) > 5 or any(not isinstance(d, int) or d < 8 or d % 8 for d in dims):
            raise ValueError(f"policy_down_dims must be at most 5 widths, each a positive multiple of 8 (group norm), "
                             f"got {dims}")
        mlp = self.policy_low_dim_mlp
        if len(mlp) > 4 or any(not isinstance(d, int) or isinstance(d, bool) or d < 1 for d in mlp):
            raise ValueError(f"policy_low_dim_mlp must be at most 4 positive int widths, got {mlp}")
        if not 1 <= self.validation_streams < self.play_streams:
            raise ValueError(f"validation_streams must be in [1, play_streams), got {self.validation_streams}")
        if not 0 <= self.play_perturb <= 1:
            raise ValueError(f"play_perturb must be a probability in [0, 1], got {self.play_perturb}")
        if not 0 <= self.block_play_weight < float("inf"):
            raise ValueError(f"block_play_weight must be a finite number >= 0, got {self.block_play_weight}")
        if not 0 < self.keep_fraction <= 1:
            raise ValueError(f"keep_fraction must be in (0, 1], got {self.keep_fraction}")
        if self.scale < 0 or self.itps_scale < 0 or self.sigma <= 0:
            raise ValueError("scale and itps_scale must be >= 0 and sigma > 0")
        from dynaguide_jax.eval.methods import METHODS

        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"methods must be some of {METHODS}, got {self.methods}")

    @classmethod
    def for_preset(cls, name: str, **overrides) -> DemoConfig:
        """The preset's values with ``overrides`` on top."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {PRESETS}")
        values = {"tiny": TINY, "small": {}, "paper": PAPER}[name]
        return cls(**{**values, "preset": name, **overrides})

    @classmethod
    def from_results(cls, results_path: str) -> DemoConfig:
        """The settings a finished demo recorded in its ``results.json`` (unknown keys ignored; settings added
        since take their ``OFF_VALUES`` entry)."""
        with open(results_path) as f:
            given = json.load(f)["config"]
        given = {**OFF_VALUES, **given}  # a setting newer than the results: what was built before it existed
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()
                      if k in cls.__dataclass_fields__})

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def settings(self, *names: str) -> dict:
        """The named settings as they read back from JSON (tuples as lists). Empty tuples (a setting left
        to the model, e.g. ``policy_down_dims``) and settings at their ``OFF_VALUES`` entry are left out, so
        adding such a setting keeps existing caches."""
        values = {n: getattr(self, n) for n in names}
        return {n: list(v) if isinstance(v, tuple) else v for n, v in values.items()
                if v != () and not (n in OFF_VALUES and v == OFF_VALUES[n])}

    def fingerprint(self, *names: str) -> str:
        """A short hash of the named settings (a stage's inputs, ``settings``)."""
        return hashlib.sha256(json.dumps(self.settings(*names), sort_keys=True).encode()).hexdigest()[:16]


# settings added after caches existed, at the value that builds what was built before them (left out of keys)
OFF_VALUES = {"play_perturb": 0.0, "dynamics_noised": False}
TINY = dict(image_size=32, gc_goal_size=64, play_streams=4, play_steps=1000, validation_streams=1, encoder_size=28,
            policy_steps=60, gc_steps=60, policy_batch=16, dynamics_steps=40, dynamics_batch=16, rollouts=2, horizon=28,
            ddim_steps=2, repeats=2, gpc_samples=2, max_goals=4, gifs=1)
PAPER = dict(image_size=200, gc_goal_size=200, play_streams=32, play_steps=20000, validation_streams=4,
             encoder_size=224, policy_obs="cameras", policy_obs_norm=False, policy_model="paper", policy_steps=100000,
             gc_steps=100000, policy_batch=64, policy_lr=1e-4, dynamics_model="paper", dynamics_steps=60000,
             dynamics_batch=64, dynamics_lr=1e-4, dynamics_noised=False, rollouts=100, horizon=400)

# which settings each stage reads (a stage is rebuilt when one of these, or an earlier stage, changes)
STAGE_FIELDS = {
    "play": ("seed", "image_size", "play_streams", "play_steps", "validation_streams", "block_play_weight",
             "play_perturb"),
    "rlds": (),
    "features": ("encoder", "encoder_size"),
    "goals": ("keep_fraction", "max_goals"),
    "policy": ("policy_obs", "policy_obs_norm", "policy_model", "policy_down_dims", "policy_low_dim_mlp",
               "policy_steps", "policy_batch", "policy_lr"),
    "gc": ("policy_obs", "policy_obs_norm", "policy_model", "policy_down_dims", "policy_low_dim_mlp", "gc_steps",
           "gc_goal_size", "policy_batch", "policy_lr"),
    "dynamics": ("dynamics_model", "dynamics_steps", "dynamics_batch", "dynamics_lr", "dynamics_noised"),
    "eval": ("rollouts", "horizon", "ddim_steps", "scale", "repeats", "sigma", "gpc_samples", "itps_scale", "methods",
             "gifs"),
}
# revisions of what a stage's code builds from the same settings: a stage listed here is rebuilt when its
# number changes (policy, gc 2: angles in robot_obs / scene_obs standardised on the circle; goals 2: the
# robot's reset poses picked from the validation play too; eval 2: sigma applied scaled to the model's features;
# eval 3: ITPS steers toward the target's part, as the original's loc_target, not the goal frames' mean tcp)
STAGE_RECIPES = {"policy": 2, "gc": 2, "goals": 2, "eval": 3}
STAGE_DEPENDS = {"play": (), "rlds": ("play",), "features": ("rlds",), "goals": ("rlds",), "policy": ("rlds",),
                 "gc": ("rlds",), "dynamics": ("features",), "eval": ("features", "goals", "policy", "gc", "dynamics")}
