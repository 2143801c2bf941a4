"""``dynaguide train policy``: the image diffusion policy on toy-world or RLDS demonstrations."""
from __future__ import annotations

import sys

from dynaguide_jax.cli.dataclass_args import add_dataclass_args, dataclass_from_args
from dynaguide_jax.outputs import prepare_output_dir


def add_parser(tsub) -> None:
    from dynaguide_jax.policy.train import PolicyTrainConfig

    tp = tsub.add_parser("policy", help="train the diffusion policy (JAX), EMA + orbax checkpoints",
                         description="Train the image diffusion policy; rerunning with the same --out resumes "
                         "exactly where a killed run stopped. --data toy: demonstrations from the built-in "
                         "toy world.")
    tp.add_argument("--data", choices=["toy", "rlds"], default="toy")
    tp.add_argument("--rlds", default=None, help="prepared RLDS dataset (with --data rlds)")
    tp.add_argument("--split", default="train")
    tp.add_argument("--cameras", nargs="+", default=["rgb_gripper", "rgb_static"])
    tp.add_argument("--action-field", default="rel_action")
    tp.add_argument("--model", choices=["paper", "small"], default="paper", help="policy size preset")
    tp.add_argument("--episodes", type=int, default=64)
    tp.add_argument("--length", type=int, default=32)
    tp.add_argument("--data-seed", type=int, default=0)
    tp.add_argument("--goal-conditioned", action="store_true", help="the GC baseline (goal image: --goal-mode)")
    tp.add_argument("--goal-mode", choices=["last", "future"], default="last",
                    help="GC goal: last = the episode's (segment's) final frame, as the original (default); "
                         "future = a random later frame (hindsight)")
    tp.add_argument("--goal-camera", default="rgb_static",
                    help="GC goal image camera (default: rgb_static, the original's third_person)")
    tp.add_argument("--out", default="runs/policy")
    tp.add_argument("--stop-after", type=int, default=None, help="stop after this many total steps")
    tp.add_argument("--quiet", action="store_true")
    add_dataclass_args(tp, PolicyTrainConfig)
    tp.set_defaults(func=run)


def rlds_policy_data(args):
    """``(PolicyConfig, EpisodeData)``: cameras and proprio of an RLDS split, in memory (fits datasets up
    to a few 100k frames), one episode per behaviour segment where the dataset has them."""
    from dynaguide_jax.data.rlds import read_policy_segments
    from dynaguide_jax.policy import PolicyConfig

    if not args.rlds:
        raise ValueError("--data rlds needs --rlds DATASET_DIR")
    cams = tuple(args.cameras)
    if args.goal_conditioned and args.goal_camera not in cams:
        raise ValueError(f"--goal-camera {args.goal_camera} is not among --cameras {list(cams)}")
    data = read_policy_segments(args.rlds, args.split, ("observation/robot_obs", *(f"observation/{c}" for c in cams)),
                                args.action_field, rename={"observation/robot_obs": "proprio"})
    # the original's GC config: one observation frame (To = 1), the goal from the static camera
    pcfg = PolicyConfig(action_dim=data.actions.shape[1], obs_keys=("proprio", *cams),
                        rgb_shapes=tuple((c, tuple(data.obs[c].shape[1:3])) for c in cams),
                        low_dim=(("proprio", data.obs["proprio"].shape[1]),),
                        obs_horizon=1 if args.goal_conditioned else 2,
                        goal_rgb_keys=(args.goal_camera,) if args.goal_conditioned else ())
    if args.model == "small":
        small = PolicyConfig.preset("small")
        pcfg = pcfg.replace(down_dims=small.down_dims, n_groups=small.n_groups, step_embed_dim=small.step_embed_dim,
                            feature_dim=small.feature_dim, num_keypoints=small.num_keypoints,
                            backbone_widths=small.backbone_widths)
    blind = pcfg.blind_cameras()
    if blind:
        print(f"WARNING: ResNet18 reduces {', '.join(blind)} to a 1 x 1 keypoint map, the same for every image: the "
              "policy cannot see them (images must be more than 32 px)", file=sys.stderr)
    return pcfg, data


def run(args) -> int:
    from dynaguide_jax.policy import DiffusionPolicy
    from dynaguide_jax.policy.toy import toy_episodes, toy_policy_config
    from dynaguide_jax.policy.train import PolicyTrainConfig, train_policy
    from dynaguide_jax.policy.windows import policy_batch

    cfg = dataclass_from_args(PolicyTrainConfig, args)
    prepare_output_dir(args.out)
    if args.data == "toy":
        pcfg = toy_policy_config(args.goal_conditioned)
        data = toy_episodes(args.data_seed, args.episodes, args.length)
    else:
        pcfg, data = rlds_policy_data(args)
    batches = lambda step: policy_batch(data, pcfg, cfg.batch_size, cfg.seed, step, args.goal_mode)  # noqa: E731
    result = train_policy(DiffusionPolicy(pcfg), batches, cfg, args.out, progress=not args.quiet,
                          stop_after=args.stop_after)
    if result.resumed_from is not None:
        print(f"resumed from step {result.resumed_from}")
    last = result.losses[-1] if result.losses else None
    print(f"trained {pcfg.rgb_keys} policy on {len(data.episode_ends)} {args.data} episodes; "
          f"last logged (step, loss) = {last}; run directory {args.out}")
    return 0
