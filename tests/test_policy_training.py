"""Policy training: EMA equals diffusers, windows as robomimic, exact resume after a kill,
and a trained policy saved, restored, steered and run in a control loop."""
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers.training_utils import EMAModel

from dynaguide_jax import toyworld
from dynaguide_jax.diffusion import guided_sample
from dynaguide_jax.dynamics import DynamicsConfig, init_dynamics
from dynaguide_jax.guidance import DynaGuide, GoalSet
from dynaguide_jax.policy import DiffusionPolicy
from dynaguide_jax.policy.chunker import ActionChunker
from dynaguide_jax.policy.toy import toy_episodes, toy_policy_config
from dynaguide_jax.policy.train import PolicyTrainConfig, load_trained_policy, train_policy
from dynaguide_jax.policy.windows import policy_batch
from dynaguide_jax.data.episodes import EpisodeData
from dynaguide_jax.training import EMAConfig, ema_decay, ema_update
from tests.proc_utils import kill_after_checkpoint
from tests.test_cli import ENV


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_matches_diffusers(warmup):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    ref = EMAModel(params, power=0.75, use_ema_warmup=warmup)
    cfg = EMAConfig(warmup=warmup, power=0.75)
    ema = [p.detach().numpy().copy() for p in params]
    for n in range(1, 40):
        with torch.no_grad():
            for p in params:
                p.add_(0.1 * torch.randn_like(p))
        ref.step(params)
        ema = ema_update(cfg, ema, [p.detach().numpy() for p in params], n)
        assert float(ema_decay(cfg, n)) == pytest.approx(ref.get_decay(n), abs=1e-7)
    for a, b in zip(ema, ref.shadow_params):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=1e-6)


def test_windows_pad_like_robomimic_and_goals_stay_in_episode():
    cfg = toy_policy_config(goal_conditioned=True).replace(obs_keys=("proprio", "camera"), obs_horizon=2)
    assert toy_policy_config(goal_conditioned=True).obs_horizon == 1  # the original's GC config: To = 1
    n = 12
    frames = np.arange(n, dtype=np.float32)
    data = EpisodeData(obs={"proprio": np.repeat(frames[:, None], 4, 1),
                            "camera": np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None],
                                                      (n, 56, 56, 3)).copy()},
                       actions=np.repeat(frames[:, None], 7, 1), episode_ends=np.array([5, 12]))
    for step in range(20):
        b = policy_batch(data, cfg, 16, seed=1, step=step)
        obs_t = b["obs"]["proprio"][:, -1, 0]  # current frame index
        ep_end = np.where(obs_t < 5, 4, 11)
        ep_start = np.where(obs_t < 5, 0, 5)
        np.testing.assert_array_equal(b["obs"]["proprio"][:, 0, 0], np.maximum(obs_t - 1, ep_start))
        want = np.clip(obs_t[:, None] - 1 + np.arange(16)[None], ep_start[:, None], ep_end[:, None])
        np.testing.assert_array_equal(b["actions"][:, :, 0], want)
        np.testing.assert_array_equal(b["goal"]["camera"][:, 0, 0, 0], ep_end)  # the original's goal_mode "last"
        g = policy_batch(data, cfg, 16, seed=1, step=step, goal_mode="future")["goal"]["camera"][:, 0, 0, 0]
        assert ((g >= obs_t) & (g <= ep_end)).all()
    with pytest.raises(ValueError, match="goal_mode must be one of"):
        policy_batch(data, cfg, 4, 1, 3, goal_mode="random")
    again = policy_batch(data, cfg, 4, 1, 3)["actions"]
    np.testing.assert_array_equal(policy_batch(data, cfg, 4, 1, 3)["actions"], again)
    with pytest.raises(ValueError, match="episode_ends"):
        EpisodeData(obs={}, actions=np.zeros((5, 7)), episode_ends=np.array([3, 4]))


def test_default_optimizer_is_robomimics_adam():
    """PolicyTrainConfig's defaults against torch: robomimic's optimizer_from_optim_params builds
    ``optim.Adam(lr=1e-4, weight_decay=L2)`` with L2 = 0 and no lr scheduler for the original's
    configs (robomimic/utils/torch_utils.py; configs/diffusion_policy_image_calvin_ddim.json)."""
    cfg = PolicyTrainConfig(steps=50)
    assert (cfg.optimizer, cfg.lr_schedule, cfg.learning_rate, cfg.weight_decay) == ("adam", "constant", 1e-4, 0.0)
    opt, schedule = cfg.make_optimizer()
    assert float(schedule(0)) == float(schedule(49)) == pytest.approx(1e-4)
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5,)).astype(np.float32)
    tw = torch.tensor(w, requires_grad=True)
    ref = torch.optim.Adam([tw], lr=1e-4, weight_decay=0.0)
    params, state = jnp.asarray(w), opt.init(jnp.asarray(w))
    for _ in range(5):
        g = rng.normal(size=(5,)).astype(np.float32)
        tw.grad = torch.tensor(g)
        ref.step()
        upd, state = opt.update(jnp.asarray(g), state, params)
        params = params + upd
    np.testing.assert_allclose(np.asarray(params), tw.detach().numpy(), atol=1e-7)
    warm = PolicyTrainConfig(steps=50, optimizer="adamw", lr_schedule="warmup_cosine", warmup_steps=10)
    assert float(warm.make_optimizer()[1](0)) == 0.0  # the diffusion-policy recipe stays an option
    with pytest.raises(ValueError, match="optimizer must be one of"):
        PolicyTrainConfig(optimizer="sgd").make_optimizer()


# The settings of the `dynaguide train policy` runs below (toy data: 8 episodes of 20 frames, data seed 0)
CLI_STEPS, CLI_TRAIN = 12, dict(batch_size=4, warmup_steps=2, checkpoint_every=2, log_every=1)


def cli_batches():
    cfg = toy_policy_config()
    data = toy_episodes(0, episodes=8, length=20)
    return cfg, lambda s: policy_batch(data, cfg, 4, 0, s)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """One uninterrupted run, in-process, with the settings of ``run_cli_training``: the reference of
    the in-process resume, the bf16 run and the killed CLI run (one training instead of one per test;
    its programs, compiled here, come from the compile cache in the CLI processes)."""
    cfg, batches = cli_batches()
    tc = PolicyTrainConfig(steps=CLI_STEPS, **{**CLI_TRAIN, "checkpoint_every": CLI_STEPS})  # losses only
    return train_policy(DiffusionPolicy(cfg), batches, tc, tmp_path_factory.mktemp("reference") / "run",
                        progress=False)


def test_resume_in_process_and_bf16(tmp_path, reference_run):
    cfg, batches = cli_batches()
    tc = PolicyTrainConfig(steps=CLI_STEPS, **{**CLI_TRAIN, "checkpoint_every": 3})  # checkpoints 3, 6, 9, 12
    full = reference_run
    assert len(full.losses) == CLI_STEPS and full.resumed_from is None
    train_policy(DiffusionPolicy(cfg), batches, tc, tmp_path / "b", progress=False, stop_after=3)
    again = train_policy(DiffusionPolicy(cfg), batches, tc, tmp_path / "b", progress=False)
    assert again.resumed_from == 3 and again.losses == full.losses
    bf16_cfg = PolicyTrainConfig(**{**tc.__dict__, "compute_dtype": "bfloat16", "checkpoint_every": CLI_STEPS})
    bf16 = train_policy(DiffusionPolicy(cfg), batches, bf16_cfg, tmp_path / "c", progress=False)
    # same batches and keys: bf16 compute tracks the fp32 loss curve (bf16 has ~3 significant digits)
    np.testing.assert_allclose([x for _, x in bf16.losses], [x for _, x in full.losses], rtol=0.05)
    assert jax.tree.leaves(bf16.params)[0].dtype == jnp.float32  # fp32 params under bf16 compute


def test_trained_policy_restored_steered_and_run_in_a_loop(tmp_path):
    cfg = toy_policy_config()
    data = toy_episodes(episodes=8, length=20)
    tc = PolicyTrainConfig(steps=4, batch_size=4, warmup_steps=1, checkpoint_every=4)
    trained = train_policy(DiffusionPolicy(cfg), lambda s: policy_batch(data, cfg, 4, 0, s), tc, tmp_path,
                           progress=False)
    policy, params, schedule = load_trained_policy(tmp_path)
    assert set(params) == {"obs_encoder", "noise_pred_net"}  # robomimic's split: EMA noise net, trained encoder
    jax.tree.map(np.testing.assert_array_equal, params["noise_pred_net"],
                 jax.tree.map(np.asarray, trained.ema_params["noise_pred_net"]))
    jax.tree.map(np.testing.assert_array_equal, params["obs_encoder"],
                 jax.tree.map(np.asarray, trained.params["obs_encoder"]))
    ema = load_trained_policy(tmp_path, weights="ema")[1]
    jax.tree.map(np.testing.assert_array_equal, ema, jax.tree.map(np.asarray, trained.ema_params))
    with pytest.raises(ValueError, match="weights must be one of"):
        load_trained_policy(tmp_path, weights="best")
    broken = tmp_path.parent / (tmp_path.name + "_corrupt")  # the params files of the newest step overwritten
    shutil.copytree(tmp_path, broken)
    for f in (broken / "checkpoints" / "4").rglob("manifest.ocdbt"):
        f.write_bytes(b"not an ocdbt manifest")
    with pytest.raises(ValueError, match=r"_corrupt/checkpoints/4: cannot restore the policy state of "):
        load_trained_policy(broken)

    dyn = DynamicsConfig.preset("small").replace(patches_per_camera=16, proprio_dim=4)
    dyn_params = init_dynamics(dyn, jax.random.key(1))
    goals = GoalSet.create(np.random.default_rng(0).normal(size=(3, 16 * 64)).astype(np.float32))
    guide = DynaGuide(dynamics=dyn)
    gparams = {"dynamics": dyn_params, "goals": goals, "sigma": 5.0}
    patches = jnp.asarray(np.random.default_rng(1).normal(size=(1, 16, 64)), jnp.float32)

    @jax.jit
    def sample(obs, key):
        cond = policy.encode_obs(params, obs)
        gobs = {"patches": patches, "proprio": obs["proprio"][:, -1]}
        return guided_sample(policy.eps_fn, params, cond, guide, gparams, gobs, key=key, scale=1.0,
                             repeats=2, schedule=schedule, action_shape=(16, 7)).actions

    chunker = ActionChunker(sample, cfg.obs_horizon, action_horizon=8)
    xy = np.zeros(2, np.float32)
    bg = toyworld.background(56)
    for t in range(12):
        obs = {"proprio": np.r_[xy, 0, 0].astype(np.float32),
               "camera": np.asarray(toyworld.render(xy[None], 56, 12.0, bg))[0]}
        action = chunker.act(obs, jax.random.key(t))
        assert action.shape == (7,) and np.isfinite(action).all()
        xy = np.clip(xy + action[:2] / 16, -1, 1)
    assert chunker.chunks_sampled == 2  # 12 steps, 8 executed per chunk


def run_cli_training(out, steps, extra=(), **popen):
    cmd = [sys.executable, "-m", "dynaguide_jax.cli", "train", "policy", "--out", str(out), "--steps", str(steps),
           "--batch-size", "4", "--checkpoint-every", "2", "--log-every", "1", "--warmup-steps", "2",
           "--episodes", "8", "--length", "20", "--quiet", *extra]
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def losses(run):
    return [(r["step"], r["loss"]) for r in map(json.loads, open(os.path.join(run, "metrics.jsonl")))]


@pytest.mark.slow
def test_killed_run_resumes_with_the_same_loss_curve(tmp_path, reference_run):
    """Killed (SIGKILL) once its step-4 checkpoint exists, then rerun: the CLI run ends with the loss
    curve of the uninterrupted run with the same settings (``reference_run``)."""
    victim = run_cli_training(tmp_path / "killed", CLI_STEPS)
    ckpts = tmp_path / "killed" / "checkpoints"
    kill_after_checkpoint(victim, ckpts, 4)
    resumed = run_cli_training(tmp_path / "killed", CLI_STEPS)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "resumed from step" in out
    assert len(reference_run.losses) == CLI_STEPS
    assert losses(tmp_path / "killed") == reference_run.losses


def test_bad_policy_run_directories_are_named(tmp_path):
    """Missing run, config, checkpoints, or a config that is not a policy run's: one error naming the
    path, and nothing created on the way (CheckpointManager would create the checkpoint folder)."""
    import dataclasses

    from dynaguide_jax.diffusion.schedule import DDIMSchedule

    with pytest.raises(FileNotFoundError, match=r"nope: no such policy run directory"):
        load_trained_policy(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(FileNotFoundError, match=r"run/config.json is missing: .* is not a `dynaguide train policy`"):
        load_trained_policy(run)
    (run / "config.json").write_text(json.dumps({"policy": toy_policy_config().to_dict(),  # as train_policy
                                                 "train": dataclasses.asdict(PolicyTrainConfig()),
                                                 "schedule": dataclasses.asdict(DDIMSchedule())}))
    with pytest.raises(FileNotFoundError, match=r"run/checkpoints is missing: the run .* never saved a checkpoint"):
        load_trained_policy(run)
    assert not (run / "checkpoints").exists()
    good = (run / "config.json").read_text()
    for text, why in (("{", "Expecting property name"), (json.dumps({"policy": {}}), r"lacks \['train', 'schedule'\]"),
                      (good.replace('"down_dims"', '"down_dimz"'), "down_dimz")):
        (run / "config.json").write_text(text)
        with pytest.raises(ValueError, match=rf"run/config.json: not a policy run config \(.*{why}"):
            load_trained_policy(run)


def test_chunker_executes_the_original_slices():
    """robomimic's guided path executes chunk[To-1 : To-1+14]; the original's GPC pushes all 16 steps
    into a deque(maxlen=14) (run_sampling_baseline.py, set_full_action), executing chunk[2:16]."""
    def sample(obs, key):
        return np.arange(16, dtype=np.float32)[None, :, None].repeat(7, 2)

    for start, want in ((None, np.arange(1, 15)), (2, np.arange(2, 16))):
        chunker = ActionChunker(sample, obs_horizon=2, action_horizon=14, start=start)
        got = [chunker.act({"x": np.zeros(1)}, jax.random.key(0))[0] for _ in range(14)]
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="too short"):
        ActionChunker(sample, obs_horizon=2, action_horizon=14, start=3).act({"x": np.zeros(1)}, jax.random.key(0))


def test_goal_conditioned_policy_uses_the_goal():
    policy = DiffusionPolicy(toy_policy_config(goal_conditioned=True))
    params = policy.init(jax.random.key(0))
    obs, goal, x = policy.dummy_inputs(1)
    other = {"camera": jnp.full_like(goal["camera"], 200)}
    a = policy.eps_fn(params, x, jnp.int32(10), policy.encode_obs(params, obs, goal))
    b = policy.eps_fn(params, x, jnp.int32(10), policy.encode_obs(params, obs, other))
    assert float(jnp.abs(a - b).max()) > 1e-4
    with pytest.raises(KeyError, match="goal images"):
        policy.encode_obs(params, obs)


def test_crops_center_in_eval_random_in_training():
    from dynaguide_jax.policy.obs_encoder import center_crop, random_crop
    from dynaguide_jax.policy.train import policy_loss
    from dynaguide_jax.diffusion import DDIMSchedule

    imgs = np.arange(2 * 8 * 8 * 3, dtype=np.float32).reshape(2, 8, 8, 3)
    np.testing.assert_array_equal(np.asarray(center_crop(imgs, (4, 6))), imgs[:, 2:6, 1:7])
    a = np.asarray(random_crop(jax.random.key(0), jnp.asarray(imgs), (4, 4)))
    assert a.shape == (2, 4, 4, 3)
    crops = {np.asarray(random_crop(jax.random.key(k), jnp.asarray(imgs), (4, 4)))[0, 0, 0, 0] for k in range(20)}
    assert len(crops) > 3  # different offsets for different keys
    for img, crop in zip(imgs, a):  # every crop is a window of its own image
        found = any(np.array_equal(img[t:t + 4, l:l + 4], crop) for t in range(5) for l in range(5))  # noqa: E741
        assert found
    cfg = toy_policy_config().replace(crop=(48, 48))
    policy = DiffusionPolicy(cfg)
    params = policy.init(jax.random.key(0))
    obs, _, x = policy.dummy_inputs(2)
    assert policy.encode_obs(params, obs).shape == (2, cfg.cond_dim)  # eval: center crop
    loss = policy_loss(policy, DDIMSchedule(), params, {"obs": obs, "actions": x}, jax.random.key(1))
    assert np.isfinite(float(loss))


def test_toyworld_step_checks_actions():
    xy = jnp.zeros((2, 2))
    chunks = jnp.full((2, 4, 3), 0.5)
    np.testing.assert_allclose(np.asarray(toyworld.step(xy, chunks)), 0.5)  # happy path
    with pytest.raises(ValueError, match=r"actions must be chunks \[B=2, T, A>=2\].*got shape \(2, 4, 1\)"):
        toyworld.step(xy, jnp.ones((2, 4, 1)))  # was broadcast over both axes
    with pytest.raises(ValueError, match=r"got shape \(3, 4, 2\)"):
        toyworld.step(xy, jnp.ones((3, 4, 2)))
    with pytest.raises(ValueError, match=r"xy must be positions \[B, 2\]"):
        toyworld.step(jnp.zeros(2), chunks)
    with pytest.raises(FloatingPointError, match=r"1 non-finite value\(s\), first at index \(1, 2, 0\)"):
        toyworld.step(xy, chunks.at[1, 2, 0].set(jnp.nan))
    assert jax.jit(toyworld.step)(xy, chunks).shape == (2, 2)  # traced: shape checks only


def test_chunker_rejects_non_finite_chunks():
    calls = []

    def sample(obs, key):
        calls.append(1)
        chunk = np.zeros((1, 16, 7), np.float32)
        if len(calls) == 2:
            chunk[0, 5, 3] = np.nan
        return chunk

    chunker = ActionChunker(sample, obs_horizon=2, action_horizon=8)
    for _ in range(8):  # happy path: the first chunk is executed
        assert np.isfinite(chunker.act({"x": np.zeros(1)}, jax.random.key(0))).all()
    with pytest.raises(FloatingPointError, match=r"chunk 1 .*non-finite actions at steps \[5\] of 16"):
        chunker.act({"x": np.zeros(1)}, jax.random.key(0))


def test_bad_training_configs_fail_before_the_run_directory(tmp_path):
    from dynaguide_jax.training import DynamicsTrainConfig
    for cls, kw, msg in ((PolicyTrainConfig, dict(steps=0), "PolicyTrainConfig.steps must be >= 1"),
                         (PolicyTrainConfig, dict(checkpoint_every=0), "checkpoint_every must be >= 1"),
                         (PolicyTrainConfig, dict(learning_rate=-1.0), "learning_rate must be finite and > 0"),
                         (PolicyTrainConfig, dict(ema_decay=1.5), r"ema_decay must be in \[0, 1\]"),
                         (PolicyTrainConfig, dict(optimizer="sgd"), "optimizer must be one of"),
                         (PolicyTrainConfig, dict(compute_dtype="fp8"), "compute_dtype must be one of"),
                         (DynamicsTrainConfig, dict(global_batch=0), "DynamicsTrainConfig.global_batch must be >= 1"),
                         (DynamicsTrainConfig, dict(log_every=0), "log_every must be >= 1"),
                         (DynamicsTrainConfig, dict(steps=2.5), "steps must be an integer"),
                         (DynamicsTrainConfig, dict(prefetch=-1), "prefetch must be >= 0"),
                         (DynamicsTrainConfig, dict(learning_rate=0.0), "learning_rate must be finite and > 0")):
        with pytest.raises((ValueError, TypeError), match=msg):
            cls(**kw)


def test_bad_policy_configs_observations_and_batches_name_the_input():
    from dynaguide_jax.policy import PolicyConfig
    for kw, msg in ((dict(action_dim=0), "action_dim must be >= 1"), (dict(obs_keys=()), "obs_keys is empty"),
                    (dict(n_groups=7), "divisible by n_groups=7"), (dict(crop=(300, 300)), "crop"),
                    (dict(low_dim=(("proprio", 0),)), r"low_dim\['proprio'\] must be >= 1"),
                    (dict(dtype="fp8"), "dtype must be one of")):
        with pytest.raises(ValueError, match=msg):
            PolicyConfig(**kw)
    with pytest.raises(ValueError, match=r"unknown PolicyConfig fields: \['foo'\]"):
        PolicyConfig.from_dict({"foo": 1})
    pcfg = PolicyConfig.preset("small")
    policy = DiffusionPolicy(pcfg)
    obs, _, _ = policy.dummy_inputs(2)
    with pytest.raises(ValueError, match=r"obs\['camera'\] has batch 2, obs\['proprio'\] has 1"):
        policy.check_obs({**obs, "proprio": obs["proprio"][:1]})
    with pytest.raises(FloatingPointError, match=r"obs\['proprio'\]"):
        policy.check_obs({**obs, "proprio": obs["proprio"] * jnp.nan})
    with pytest.raises(TypeError, match="obs must be a dict"):
        policy.check_obs([obs])
    data = EpisodeData({"proprio": np.zeros((10, 4), np.float32), "camera": np.zeros((10, 16, 16, 3), np.uint8)},
                       np.zeros((10, 7), np.float32), [10])
    with pytest.raises(ValueError, match=r"obs\['camera'\] frames are \(16, 16, 3\).*\(32, 32, 3\)"):
        policy_batch(data, pcfg, 2, 0, 0)
    with pytest.raises(KeyError, match="'camera'"):
        policy_batch(EpisodeData({"proprio": data.obs["proprio"]}, data.actions, [10]), pcfg, 2, 0, 0)
    with pytest.raises(ValueError, match="action_dim is 7"):
        policy_batch(EpisodeData({**data.obs, "camera": np.zeros((10, 32, 32, 3), np.uint8)}, np.zeros((10, 3)), [10]),
                     pcfg, 2, 0, 0)


def test_optimizer_and_ema_settings_are_validated():
    from dynaguide_jax.training.optim import make_optimizer
    for args, kw, err, msg in (
            ((1e-4, 0), {}, ValueError, "total_steps must be >= 1"),
            ((1e-4, 10.5), {}, TypeError, "total_steps must be an integer"),
            ((float("nan"), 10), {}, ValueError, "learning_rate must be finite and > 0"),
            ((1e-4, 10), dict(warmup_steps=-1), ValueError, "warmup_steps must be >= 0"),
            ((1e-4, 10), dict(weight_decay=-1e-6), ValueError, "weight_decay must be finite and >= 0"),
            ((1e-4, 10), dict(end_fraction=2.0), ValueError, r"end_fraction must be in \[0, 1\]")):
        with pytest.raises(err, match=msg):
            make_optimizer("adamw", "warmup_cosine", *args, **kw)
    for kw, err, msg in ((dict(decay=1.5), ValueError, r"EMAConfig.decay must be in \[0, 1\]"),
                         (dict(min_decay=-0.1), ValueError, "EMAConfig.min_decay must be finite and >= 0"),
                         (dict(decay=0.5, min_decay=0.9), ValueError, "min_decay must be <= decay"),
                         (dict(update_after_step=-1), ValueError, "update_after_step must be >= 0"),
                         (dict(inv_gamma=0.0), ValueError, "inv_gamma must be finite and > 0"),
                         (dict(power=float("nan")), ValueError, "EMAConfig.power"),
                         (dict(decay=None), TypeError, "EMAConfig.decay must be a number")):
        with pytest.raises(err, match=msg):
            EMAConfig(**kw)


def test_low_dim_normalisation_standardises_before_the_condition():
    """``low_dim_norm`` equals feeding ``(x - offset) / scale`` to a policy without it; bad entries are named."""
    from dynaguide_jax.policy import PolicyConfig
    pcfg = PolicyConfig.preset("small")
    offset, scale = (0.1, -0.2, 0.3, 0.5), (0.05, 2.0, 0.01, 1.0)
    normed = pcfg.replace(low_dim_norm=(("proprio", offset, scale),))
    assert PolicyConfig.from_dict(normed.to_dict()) == normed  # survives the run's config.json
    params = DiffusionPolicy(pcfg).init(jax.random.key(0))  # the same params fit both
    obs, _, _ = DiffusionPolicy(pcfg).dummy_inputs(3)
    obs = {**obs, "proprio": jax.random.normal(jax.random.key(1), obs["proprio"].shape)}
    pre = {**obs, "proprio": (obs["proprio"] - jnp.asarray(offset)) / jnp.asarray(scale)}
    a = DiffusionPolicy(normed).encode_obs(params, obs)
    np.testing.assert_allclose(np.asarray(a), np.asarray(DiffusionPolicy(pcfg).encode_obs(params, pre)), atol=1e-6)
    assert float(jnp.abs(a - DiffusionPolicy(pcfg).encode_obs(params, obs)).max()) > 0.1  # it does change them
    for norm, msg in (((("camera", offset, scale),), r"low_dim key.*\['proprio'\]"),
                      ((("proprio", offset[:3], scale),), "needs 4 offsets and scales, got 3 and 4"),
                      ((("proprio", offset, (1.0, 0.0, 1.0, 1.0)),), "scales finite and > 0"),
                      ((("proprio", (0.0, float("nan"), 0.0, 0.0), scale),), "offsets must be finite")):
        with pytest.raises(ValueError, match=msg):
            pcfg.replace(low_dim_norm=norm)


def test_low_dim_angles_standardise_on_the_circle():
    """``low_dim_angles`` entries enter as ``wrap(x - offset) / scale``: an angle just past +pi and one just
    short of -pi give the same features; other entries are unchanged; bad entries are named."""
    from dynaguide_jax.policy import PolicyConfig
    pcfg = PolicyConfig.preset("small")
    offset, scale = (0.1, np.pi, 0.3, 0.5), (0.05, 0.03, 0.01, 1.0)
    normed = pcfg.replace(low_dim_norm=(("proprio", offset, scale),), low_dim_angles=(("proprio", (1,)),))
    assert PolicyConfig.from_dict(normed.to_dict()) == normed
    params = DiffusionPolicy(pcfg).init(jax.random.key(0))
    obs, _, _ = DiffusionPolicy(pcfg).dummy_inputs(4)
    x = np.array(jax.random.normal(jax.random.key(1), obs["proprio"].shape), np.float32)
    x[..., 1] = np.array([np.pi - 0.02, -np.pi + 0.02, 0.5, -3.0])[:, None]  # two near pi, one each side of +-pi
    enc = lambda cfg, p: np.asarray(DiffusionPolicy(cfg).encode_obs(params, {**obs, "proprio": jnp.asarray(p)}))  # noqa
    dev = x - np.asarray(offset, np.float32)
    dev[..., 1] = (dev[..., 1] + np.pi) % (2 * np.pi) - np.pi
    np.testing.assert_allclose(enc(normed, x), enc(pcfg, dev / np.asarray(scale, np.float32)), atol=1e-5)
    assert dev[0, 0, 1] == pytest.approx(-0.02, abs=1e-5) and dev[1, 0, 1] == pytest.approx(0.02, abs=1e-5)
    plain = pcfg.replace(low_dim_norm=normed.low_dim_norm)  # without the wrap, +-pi are 2 pi / 0.03 apart
    gap = lambda f: abs(f[0, 1] - f[1, 1])  # noqa: E731  (the roll-like entry of rows 0 and 1, 0.04 rad apart)
    assert gap(enc(normed, x)) == pytest.approx(0.04 / 0.03, rel=1e-3) and gap(enc(plain, x)) > 200
    for angles, msg in (((("scene", (1,)),), r"key that low_dim_norm standardises \(\['proprio'\]\)"),
                        ((("proprio", (4,)),), r"distinct ints in \[0, 4\), got \(4,\)"),
                        ((("proprio", (1, 1)),), "distinct ints"),
                        ((("proprio", (True,)),), "distinct ints"),
                        ((("proprio", 1),), "tuple of entry indices"),
                        ((("proprio", (1,)), ("proprio", (2,))), "one per key")):
        with pytest.raises(ValueError, match=msg):
            normed.replace(low_dim_angles=angles)
    with pytest.raises(ValueError, match="low_dim_norm standardises"):
        pcfg.replace(low_dim_angles=(("proprio", (1,)),))  # angles without standardisation


def test_demo_low_dim_statistics_of_angles_are_circular():
    """The tcp's roll, near pi and flipping sign in play, gets its circular mean and a small deviation."""
    from dynaguide_jax.demo.train import low_dim_norm
    rng = np.random.default_rng(0)
    roll = (np.pi + rng.normal(0, 0.03, 2000) + np.pi) % (2 * np.pi) - np.pi  # about half of it near -pi
    assert 0.3 < (roll > 0).mean() < 0.7
    x = np.stack([roll, rng.normal(0.2, 0.1, 2000)], -1)
    ((_, offset, scale),) = low_dim_norm({"proprio": x}, ("proprio",), angles={"proprio": (0,)})
    assert abs(abs(offset[0]) - np.pi) < 0.01 and scale[0] == pytest.approx(0.03, rel=0.1)
    assert offset[1] == pytest.approx(x[:, 1].mean()) and scale[1] == pytest.approx(x[:, 1].std())
    ((_, offset, scale),) = low_dim_norm({"proprio": x}, ("proprio",))  # as a line: the flips dominate
    assert scale[0] > 2.5


def test_demo_low_dim_statistics_floor_the_scale():
    from dynaguide_jax.demo.train import NORM_FLOOR, low_dim_norm
    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(0.3, 0.2, 500), np.full(500, 1.5)], -1).astype(np.float32)  # one entry constant
    ((key, offset, scale),) = low_dim_norm({"proprio": x}, ("proprio",))
    assert key == "proprio"
    np.testing.assert_allclose(offset, x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(scale, [x[:, 0].std(), NORM_FLOOR], rtol=1e-5)


def test_low_dim_mlp_maps_the_low_dim_inputs_after_the_cameras():
    """``low_dim_mlp``: a frame's standardised low-dim inputs go through Dense + Mish layers and their
    output follows the cameras' features; the cameras' features are those of the plain encoder with
    the same camera weights. Oracle: the MLP written out in numpy from the params."""
    from dynaguide_jax.policy import PolicyConfig
    base = PolicyConfig.preset("small").replace(low_dim_norm=(("proprio", (0.1, 0.2, 0.3, 0.4), (2.0, 1.0, 0.5, 4.0)),))
    mlp = base.replace(low_dim_mlp=(24, 16))
    assert PolicyConfig.from_dict(mlp.to_dict()) == mlp
    assert base.obs_feature_dim == 16 + 4 and mlp.obs_feature_dim == 16 + 16
    assert mlp.cond_dim == 2 * 32
    policy = DiffusionPolicy(mlp)
    params = policy.init(jax.random.key(0))
    layers = [params["obs_encoder"][f"low_dim_mlp_{i}"] for i in range(2)]
    assert layers[0]["kernel"].shape == (4, 24) and layers[1]["kernel"].shape == (24, 16)
    obs, _, _ = policy.dummy_inputs(3)
    obs = {**obs, "proprio": jax.random.normal(jax.random.key(1), obs["proprio"].shape),
           "camera": jax.random.randint(jax.random.key(2), obs["camera"].shape, 0, 256).astype(jnp.uint8)}
    got = np.asarray(policy.encode_obs(params, obs)).reshape(3, 2, -1)

    def mish(x):
        return x * np.tanh(np.log1p(np.exp(x)))
    x = (np.asarray(obs["proprio"], np.float64) - np.asarray(base.low_dim_norm[0][1])) / np.asarray(
        base.low_dim_norm[0][2])
    for layer in layers:
        x = mish(x @ np.asarray(layer["kernel"], np.float64) + np.asarray(layer["bias"], np.float64))
    np.testing.assert_allclose(got[..., 16:], x, atol=1e-5)
    plain_params = {**params, "obs_encoder": {k: v for k, v in params["obs_encoder"].items()
                                              if not k.startswith("low_dim_mlp")}}
    plain = np.asarray(DiffusionPolicy(base).encode_obs(plain_params, obs)).reshape(3, 2, -1)  # in obs_keys order
    np.testing.assert_allclose(got[..., :16], plain[..., 4:], atol=1e-6)
    np.testing.assert_allclose(plain[..., :4], (np.asarray(obs["proprio"]) - np.asarray(base.low_dim_norm[0][1]))
                               / np.asarray(base.low_dim_norm[0][2]), atol=1e-5)
    for bad in ((0,), (8, -1), (16.5,)):
        with pytest.raises((ValueError, TypeError), match="low_dim_mlp"):
            base.replace(low_dim_mlp=bad)
