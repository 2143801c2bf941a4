"""`dynaguide demo` (the ArticulatedParts pipeline): padded goal sets are exact, stages cache and
rebuild as their inputs say, bad settings fail clearly, and the tiny preset produces every artefact."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dynaguide_jax.baselines.gpc import mean_goal_distance
from dynaguide_jax.demo import DemoConfig
from dynaguide_jax.demo.config import RESNET_STAGES, STAGE_FIELDS
from dynaguide_jax.demo.stages import Stages
from dynaguide_jax.guidance import GoalSet, guidance_metric
from tests.test_calvin_env import ROBOT
from tests.test_calvin_env import SKIP as CALVIN_SKIP
from tests.test_cli import dynaguide


def test_padded_goal_sets_give_the_exact_metric_gradient_and_gpc_score():
    rng = np.random.default_rng(0)
    goals, neg, z = rng.normal(size=(3, 12)), rng.normal(size=(2, 12)), rng.normal(size=(5, 12))
    junk = rng.normal(size=(4, 12)) * 50  # padded rows: anything, they must not count
    padded = GoalSet.create(np.concatenate([goals, junk]), np.concatenate([neg, junk[:1]]),
                            positive_mask=np.arange(7) < 3, negative_mask=np.arange(3) < 2)
    plain = GoalSet.create(goals, neg)
    f = lambda g: lambda x: guidance_metric(x, g, 2.0).sum()  # noqa: E731
    np.testing.assert_allclose(guidance_metric(z, padded, 2.0), guidance_metric(z, plain, 2.0), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(f(padded))(z), jax.grad(f(plain))(z), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(mean_goal_distance(z, np.concatenate([goals, junk]), np.arange(7) < 3),
                               mean_goal_distance(z, goals), rtol=1e-6)
    with pytest.raises(ValueError, match="positive_mask must be"):
        GoalSet.create(goals, positive_mask=np.ones(4, bool))
    with pytest.raises(ValueError, match="marks no goal"):
        GoalSet.create(goals, positive_mask=np.zeros(3, bool))
    # under jit the masks are traced: the same numbers
    jitted = jax.jit(lambda x, m: guidance_metric(x, GoalSet(jnp.concatenate([goals, junk]), positive_mask=m), 2.0))
    np.testing.assert_allclose(jitted(z, np.arange(7) < 3), guidance_metric(z, GoalSet.create(goals), 2.0), rtol=1e-6)


def test_stages_skip_finished_resume_interrupted_and_rebuild_changed(tmp_path):
    calls = []

    def work(name):
        def fn(d):
            calls.append(name)
            with open(os.path.join(d, "artefact"), "a") as f:
                f.write("x")
            return name
        return fn

    cfg = DemoConfig.for_preset("tiny", out_dir=str(tmp_path))
    st = Stages(cfg, tmp_path, log=lambda *_: None)
    assert st.run("play", "play", work("play")) == "play" and st.done("play")
    assert st.run("play", "play", work("play")) is None and calls == ["play"]  # finished: skipped
    # an interrupted stage (started, not done) keeps its directory for the trainers to resume
    def interrupted(d):
        open(os.path.join(d, "checkpoint"), "w").close()
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        st.run("policy", "policy", interrupted)
    assert not st.done("policy")
    st.run("policy", "policy", work("policy"))
    assert os.path.exists(os.path.join(st.dir("policy"), "checkpoint"))
    # a changed setting rebuilds that stage and everything below it, not the ones above
    changed = Stages(DemoConfig.for_preset("tiny", out_dir=str(tmp_path), play_steps=1200), tmp_path,
                     log=lambda *_: None)
    assert not changed.done("play") and not changed.done("policy")
    changed.run("policy", "policy", work("policy"))
    assert not os.path.exists(os.path.join(st.dir("policy"), "checkpoint"))  # wiped, not resumed
    other = Stages(DemoConfig.for_preset("tiny", out_dir=str(tmp_path), rollouts=3), tmp_path, log=lambda *_: None)
    assert other.done("play") and not other.done("eval")
    Stages(cfg, tmp_path, fresh=True, log=lambda *_: None)
    assert not os.path.exists(st.dir("play"))


def test_a_stage_recipe_revision_rebuilds_that_stage_and_those_below(monkeypatch, tmp_path):
    """A stage whose code changed what it builds (``STAGE_RECIPES``) is rebuilt from the same settings."""
    from dynaguide_jax.demo import stages as stages_mod
    cfg = DemoConfig.for_preset("tiny", out_dir=str(tmp_path))
    st = Stages(cfg, tmp_path, log=lambda *_: None)
    for name in ("play", "rlds", "policy", "features", "dynamics"):
        st.run(name, name, lambda d: None)
    keys = {n: st.key(n) for n in ("play", "rlds", "policy", "features", "dynamics", "eval")}
    monkeypatch.setitem(stages_mod.STAGE_RECIPES, "policy", stages_mod.STAGE_RECIPES["policy"] + 1)
    assert st.key("policy") != keys["policy"] and not st.done("policy") and st.key("eval") != keys["eval"]
    assert all(st.key(n) == keys[n] for n in ("play", "rlds", "features", "dynamics")) and st.done("dynamics")
    monkeypatch.setitem(stages_mod.STAGE_RECIPES, "features", 1)  # a stage enters the table: its key changes too
    assert st.key("features") != keys["features"] and not st.done("dynamics")


def test_demo_config_presets_and_bad_settings():
    assert DemoConfig.for_preset("paper").rollouts == 100 and DemoConfig.for_preset("paper").horizon == 400
    assert DemoConfig.for_preset("tiny", rollouts=5).rollouts == 5
    assert DemoConfig().policy_obs_norm and not DemoConfig.for_preset("paper").policy_obs_norm  # paper: robomimic's
    for bad, match in [(dict(encoder_size=50), "multiple of 14"), (dict(rollouts=0), "rollouts=0"),
                       (dict(methods=("base", "magic")), "methods must be"), (dict(policy_obs="smell"), "policy_obs"),
                       (dict(validation_streams=8), "validation_streams"),
                       (dict(block_play_weight=-0.5), "block_play_weight"),
                       (dict(block_play_weight=float("nan")), "block_play_weight"),
                       (dict(play_perturb=-0.1), "play_perturb"),
                       (dict(policy_low_dim_mlp=(64, 0)), "policy_low_dim_mlp"),
                       (dict(policy_low_dim_mlp=(8,) * 5), "policy_low_dim_mlp"),
                       (dict(play_perturb=float("nan")), "play_perturb"),
                       (dict(policy_down_dims=(64, 100)), "policy_down_dims"),
                       (dict(policy_down_dims=(8,) * 6), "policy_down_dims"),
                       (dict(gc_goal_size=48), "divide image_size 64 or be a multiple"),
                       (dict(gc_goal_size=32), "gc_goal_size 32 px to a 1 x 1 keypoint map"),
                       (dict(policy_obs="cameras"), "the gripper camera 32 px to a 1 x 1")]:
        with pytest.raises(ValueError, match=match):
            DemoConfig(**bad)
    with pytest.raises(ValueError, match="unknown preset"):
        DemoConfig.for_preset("huge")


def test_verdict_reads_the_paper_claims_off_the_means():
    from dynaguide_jax.demo.pipeline import verdict

    def results(**means):
        return {"methods": {k: {"mean_success": v} for k, v in means.items()}}

    assert verdict(results(base=0.06, dynaguide=0.23, gpc=0.25)) == (
        "DynaGuide 23% vs base 6%: 3.8x (paper: 70 %, 8.7x); DynaGuide NOT above gpc (25%)")
    assert verdict(results(base=0.0, dynaguide=0.1)).startswith("DynaGuide 10% vs base 0%: base never succeeds")
    assert verdict(results(base=0.0, dynaguide=0.0, gc=0.0)) == (
        "DynaGuide 0% vs base 0%: neither succeeds (paper: 70 %, 8.7x); DynaGuide NOT above gc (0%)")


def test_replaying_an_unfinished_demo_names_what_to_rerun(tmp_path):
    from dynaguide_jax.demo.pipeline import finished_demo_context

    with pytest.raises(FileNotFoundError, match="results.json is missing: run `dynaguide demo --out-dir"):
        finished_demo_context(str(tmp_path))
    (tmp_path / "results.json").write_text(json.dumps({"config": DemoConfig().to_dict()}))
    with pytest.raises(FileNotFoundError, match="the features stage is not finished with this code's settings"):
        finished_demo_context(str(tmp_path))


def test_goal_frames_are_box_filtered_or_repeated():
    from dynaguide_jax.demo.train import resize_frames

    x = np.random.default_rng(0).integers(0, 256, (3, 4, 4, 3)).astype(np.uint8)
    down = resize_frames(x, 2)
    np.testing.assert_array_equal(down[:, 0, 1], np.round(x[:, :2, 2:].astype(float).mean(axis=(1, 2))))
    up = resize_frames(x, 8)
    assert up.shape == (3, 8, 8, 3) and (up[:, ::2, ::2] == x).all() and (up[:, 1::2, 1::2] == x).all()
    assert resize_frames(x, 4) is x
    with pytest.raises(ValueError, match="divide the image size 4 or be a multiple"):
        resize_frames(x, 6)
    assert DemoConfig(policy_obs="cameras", image_size=68, gc_goal_size=68).policy_obs == "cameras"  # a 34 px gripper


def test_policy_widths_follow_the_model_unless_given():
    from types import SimpleNamespace

    from dynaguide_jax.demo.train import policy_config

    data = SimpleNamespace(obs={"proprio": np.zeros((4, 15), np.float32), "scene": np.zeros((4, 24), np.float32)})
    assert policy_config(DemoConfig(), data, False).down_dims == (32, 64)
    assert policy_config(DemoConfig(policy_down_dims=(64, 128)), data, False).down_dims == (64, 128)
    assert policy_config(DemoConfig(), data, False).low_dim_mlp == ()
    assert policy_config(DemoConfig(policy_low_dim_mlp=(64, 32)), data, False).low_dim_mlp == (64, 32)
    paper = DemoConfig(policy_model="paper", policy_obs_norm=False)
    assert policy_config(paper, data, False).down_dims == (256, 512, 1024)
    for cfg in (DemoConfig(), paper):  # DemoConfig's blind-camera check counts the models' ResNet stages right
        assert len(policy_config(cfg, data, False).backbone_widths) == RESNET_STAGES
    # left to the model (empty), the setting is not part of the key: caches from before it existed stay valid
    assert DemoConfig().fingerprint("policy_down_dims", "policy_low_dim_mlp", "policy_lr") == \
        DemoConfig().fingerprint("policy_lr")
    # the widths are the policy stages' setting: another value rebuilds them, not the dynamics model
    plain = DemoConfig().fingerprint(*STAGE_FIELDS["play"])  # play without pushes: the key from before the setting
    assert plain == DemoConfig().fingerprint(*(f for f in STAGE_FIELDS["play"] if f != "play_perturb"))
    assert DemoConfig(play_perturb=0.03).fingerprint(*STAGE_FIELDS["play"]) != plain
    # the small preset's noised dynamics model is another model; the paper preset's (not noised) keeps its old key
    dyn = STAGE_FIELDS["dynamics"]
    assert DemoConfig().dynamics_noised and not DemoConfig.for_preset("paper").dynamics_noised
    assert DemoConfig().fingerprint(*dyn) != DemoConfig(dynamics_noised=False).fingerprint(*dyn)
    paper = DemoConfig.for_preset("paper")
    assert paper.fingerprint(*dyn) == paper.fingerprint(*(f for f in dyn if f != "dynamics_noised"))
    for wide in (DemoConfig(policy_down_dims=(64, 128)), DemoConfig(policy_low_dim_mlp=(64,))):
        for stage, changed in (("policy", True), ("gc", True), ("dynamics", False)):
            assert (wide.fingerprint(*STAGE_FIELDS[stage]) != DemoConfig().fingerprint(*STAGE_FIELDS[stage])) == changed


def test_demo_cli_rejects_bad_flags_with_exit_2(tmp_path):
    proc = dynaguide("demo", "--encoder-size", "50", "--out-dir", tmp_path, check=False)
    assert proc.returncode == 2 and "multiple of 14" in proc.stderr and "Traceback" not in proc.stderr
    proc = dynaguide("demo", "--preset", "huge", check=False)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    proc = dynaguide("demo", "--jobs", "0", "--out-dir", tmp_path, check=False)
    assert proc.returncode == 2 and "--jobs must be >= 1, got 0" in proc.stderr and "Traceback" not in proc.stderr
    help_text = dynaguide("demo", "--help").stdout
    assert "--preset {tiny,small,paper}" in help_text and "--fresh" in help_text and "--rollouts" in help_text
    assert "--jobs N" in help_text and "one per CPU core" in " ".join(help_text.split())


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    """The tiny demo, run once, in one process (``--jobs 1``): its trained models serve the experiment and
    sweep tests too."""
    out_dir = tmp_path_factory.mktemp("tiny") / "demo"
    return out_dir, dynaguide("demo", "--preset", "tiny", "--out-dir", out_dir, "--quiet", "--jobs", "1").stdout


@pytest.mark.slow
def test_tiny_demo_writes_every_artefact_and_reuses_its_stages(tiny_demo, tmp_path):
    out_dir, out = tiny_demo
    assert "RANDOM-initialised ViT-S/14" in out and "ArticulatedParts (tiny preset)" in out
    results = json.loads((out_dir / "results.json").read_text())
    assert results["experiment"] == "ArticulatedParts" and results["preset"] == "tiny"
    targets = ["button_on", "button_off", "switch_on", "switch_off", "drawer_open", "drawer_close", "door_left",
               "door_right"]
    assert results["targets"] == targets and set(results["methods"]) == {"base", "dynaguide", "gc", "gpc", "itps"}
    for method, res in results["methods"].items():
        rows = res["per_target"]
        assert set(rows) == set(targets)
        assert res["mean_success"] == pytest.approx(np.mean([r["success"] for r in rows.values()]))
        for r in rows.values():
            assert r["n"] == 2 and 0 <= r["ci95"][0] <= r["success"] <= r["ci95"][1] <= 1
            assert sum(r["distribution"].values()) == pytest.approx(1.0)
    assert results["config"]["rollouts"] == 2 and "encoder_description" in results["config"]
    assert results["config"]["sigma"] == 30.0 and results["config"]["sigma_applied"] == 3.75  # 4 patches at 28 px
    from dynaguide_jax.envs.expert import loc_target  # ITPS steers toward the part, as the original's loc_target
    assert all(results["config"]["itps_targets"][t] == pytest.approx(loc_target(t).tolist()) for t in targets)
    assert "sigma 30 on the original's scale, 3.75 applied (4 x 384 predicted features)" in out
    # results written before a setting existed read back at its off value (what was built then)
    old = {**results, "config": {k: v for k, v in results["config"].items() if k != "dynamics_noised"}}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert DemoConfig.from_results(str(tmp_path / "old.json")).dynamics_noised is False
    assert DemoConfig.from_results(str(out_dir / "results.json")).dynamics_noised is True
    assert "| **mean** |" in (out_dir / "table.md").read_text()
    assert (out_dir / "table.csv").read_text().startswith("method,target,success,n,ci95_lo,ci95_hi,behaviour")
    assert (out_dir / "success.png").stat().st_size > 10_000
    gifs = sorted(os.listdir(out_dir / "eval" / "gifs"))
    assert len(gifs) == 5 and all(g.endswith(".gif") for g in gifs)
    for stage in ("play", "rlds", "features", "goals", "policy", "gc", "dynamics", "eval"):
        assert json.loads((out_dir / stage / "stage.json").read_text())["done"] is True
    for stage in ("policy", "gc"):  # state policies standardise robot_obs and scene_obs with the play's statistics
        norm = json.loads((out_dir / stage / "config.json").read_text())["policy"]["low_dim_norm"]
        assert [(k, len(o), len(sc)) for k, o, sc in norm] == [("proprio", 15, 15), ("scene", 24, 24)]
        angles = json.loads((out_dir / stage / "config.json").read_text())["policy"]["low_dim_angles"]
        assert angles == [["proprio", [3, 4, 5]], ["scene", [9, 10, 11, 15, 16, 17, 21, 22, 23]]]
        assert norm[0][2][3] < 0.2  # the tcp's roll, flipping between +-pi in play, deviates little on the circle
    # the robot starts from the original's reset-pose lists, picked from the play by the goals stage
    from dynaguide_jax.demo.config import TARGET_RESET_POSES
    from dynaguide_jax.demo.evaluate import eval_starts, load_demo_reset_poses
    from dynaguide_jax.demo.pipeline import TARGETS, world_config

    assert "robot reset poses (the original's lists): midpoint" in out
    poses = load_demo_reset_poses(str(out_dir / "goals"))
    assert poses, "the tiny play gives no reset pose"
    for p in poses.values():
        assert (p[:, 2] >= 0.53).all() and (p[:, 6] >= 0.075).all()
    starts = eval_starts(0, TARGETS, 2, world_config(DemoConfig.for_preset("tiny")), poses)
    for i, t in enumerate(TARGETS):
        if TARGET_RESET_POSES[t] in poses:
            tcp = np.asarray(starts.states.tcp_pos[i])
            listed = poses[TARGET_RESET_POSES[t]][:, :3]
            assert np.abs(tcp[:, None] - listed[None]).max(-1).min(1).max() < 1e-6
    gc_config = json.loads((out_dir / "gc" / "config.json").read_text())["policy"]
    assert gc_config["rgb_shapes"] == [["goal_static", [64, 64]]]  # the 32 px frame repeated: a 2 x 2 keypoint map
    # a rerun reuses every stage and reports the same numbers
    again = dynaguide("demo", "--preset", "tiny", "--out-dir", out_dir, "--quiet").stdout
    assert again.count("done earlier") == 8 and "worker" not in again
    assert json.loads((out_dir / "results.json").read_text())["methods"] == results["methods"]


def _final_params(run_dir, stage):
    from dynaguide_jax.policy.train import load_trained_policy
    from dynaguide_jax.training.loop import load_trained_dynamics

    return jax.tree.leaves((load_trained_policy if stage == "gc" else load_trained_dynamics)(run_dir / stage)[1])


def _rerun_gc_dynamics_eval(reference, out_dir, jobs: int, one_core: bool = False) -> str:
    """The tiny demo again with its GC policy, dynamics model and evaluation removed (DynaGuide and base)."""
    import shutil
    import subprocess
    import sys

    from tests.test_cli import ENV

    shutil.copytree(reference, out_dir)
    for stage in ("gc", "dynamics", "eval"):
        shutil.rmtree(out_dir / stage)
    # pinned to one core before JAX starts (in the child itself: a preexec_fn would fork this JAX process)
    start = ("import os, runpy, sys; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}) if sys.argv[1] == '1' "
             "else None; sys.argv = ['dynaguide'] + sys.argv[2:]; runpy.run_module('dynaguide_jax.cli', "
             "run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", start, "1" if one_core else "0", "demo", "--preset", "tiny",
                           "--out-dir", str(out_dir), "--quiet", "--jobs", str(jobs), "--methods", "dynaguide",
                           "base"], capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two cores this process may pin workers to (Linux)")
def test_worker_processes_train_and_evaluate_as_one_process_does(tiny_demo, tmp_path):
    """``--jobs 2``: the GC policy and the dynamics model train side by side in worker processes pinned to
    a core each, the methods roll out in two workers, and the models (bit for bit) and the tables equal
    those of one process on one core (XLA's CPU kernels round differently with another thread count)."""
    reference, _ = tiny_demo
    out = _rerun_gc_dynamics_eval(reference, tmp_path / "workers", 2)
    assert "stages gc, dynamics in 2 worker processes" in out
    assert "methods in 2 worker processes: dynaguide; base" in out
    assert "[gc] started in a worker on core" in out and "[gc] done in" in out and "[dynamics] done in" in out
    assert out.count("done earlier") == 5  # play, rlds, features, goals, policy
    alone = _rerun_gc_dynamics_eval(reference, tmp_path / "alone", 1, one_core=True)
    assert "in a worker" not in alone and "worker processes" not in alone
    for stage in ("gc", "dynamics"):
        for a, b in zip(_final_params(tmp_path / "alone", stage), _final_params(tmp_path / "workers", stage),
                        strict=True):
            np.testing.assert_array_equal(a, b)
    ours = json.loads((tmp_path / "workers" / "results.json").read_text())
    assert ours["methods"] == json.loads((tmp_path / "alone" / "results.json").read_text())["methods"]
    assert sorted(os.listdir(tmp_path / "workers" / "eval" / "methods")) == ["base.npy", "dynaguide.npy"]
    # an interrupted evaluation keeps its finished methods: only the missing one reruns
    out_dir = tmp_path / "workers"
    os.remove(out_dir / "eval" / "methods" / "base.npy")
    record = json.loads((out_dir / "eval" / "stage.json").read_text())
    (out_dir / "eval" / "stage.json").write_text(json.dumps({**record, "done": False}))
    again = dynaguide("demo", "--preset", "tiny", "--out-dir", out_dir, "--quiet", "--jobs", "2", "--methods",
                      "dynaguide", "base").stdout
    assert "reusing the finished rollouts of dynaguide" in again and "base: mean success" in again
    assert json.loads((out_dir / "results.json").read_text())["methods"] == ours["methods"]


@pytest.mark.slow
def test_experiment_runs_every_cell_and_writes_tables(tiny_demo, tmp_path):
    models, _ = tiny_demo
    out_dir = tmp_path / "multi"
    args = ("experiment", "multi_objectives", "--preset", "tiny", "--models-dir", models, "--targets",
            "button_on_switch_on", "drawer_dont_open", "--methods", "dynaguide", "--rollouts", "3", "--chunk", "2",
            "--out-dir", out_dir, "--quiet")
    out = dynaguide(*args).stdout
    assert out.count("done earlier") == 7  # the demo's models: nothing retrained
    assert "MultiObjectives (tiny preset, tabletop)" in out and "success / another object / nothing" in out
    results = json.loads((out_dir / "results.json").read_text())
    assert results["targets"] == ["button_on_switch_on", "drawer_dont_open"] and list(results["methods"]) == [
        "dynaguide"]
    row = results["methods"]["dynaguide"]["per_target"]["drawer_dont_open"]
    assert row["n"] == 3 and "drawer_open" not in row["success_behaviours"] and "door_left" in row["success_behaviours"]
    assert sum(row["counted_distribution"].values()) == pytest.approx(1.0)
    assert results["config"]["goal_counts"]["drawer_dont_open"]["negative"] >= 1
    assert (out_dir / "objectives.png").stat().st_size > 10_000
    (key_dir,) = (out_dir / "cells" / "dynaguide" / "drawer_dont_open").iterdir()
    assert sorted(os.listdir(key_dir)) == ["cell.json", "chunk_00000_2.npz", "chunk_00002_1.npz"]
    # (resuming a killed run is checked on the runner itself: tests/test_experiments.py)
    bad = dynaguide("experiment", "multi_objectives", "--preset", "tiny", "--targets", "nope", "--out-dir",
                    tmp_path / "bad", check=False)
    assert bad.returncode == 2 and "has no target 'nope'" in bad.stderr and not (tmp_path / "bad").exists()
    bad = dynaguide("experiment", "movable_objects", "--methods", "itps", "--out-dir", tmp_path / "bad", check=False)
    assert bad.returncode == 2 and "runs the methods" in bad.stderr


@pytest.mark.slow
def test_experiment_on_the_built_in_world_takes_another_base_policy(tiny_demo, tmp_path):
    models, _ = tiny_demo
    common = ("experiment", "articulated_parts", "--preset", "tiny", "--models-dir", models, "--targets", "button_on",
              "--methods", "base", "--rollouts", "2", "--quiet")
    dynaguide(*common, "--out-dir", tmp_path / "own")
    out = dynaguide(*common, "--policy", models / "policy", "--out-dir", tmp_path / "swapped").stdout
    assert f"base policy: {models / 'policy'} (in place of the demo's)" in out
    own, swapped = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("own", "swapped"))
    assert swapped["methods"] == own["methods"]  # the same weights, loaded from the run: the same rollouts
    assert own["config"]["policy"] is None and swapped["config"]["policy"] == str(models / "policy")
    keys = [json.loads(next((tmp_path / d / "cells" / "base" / "control").iterdir()).joinpath("cell.json")
                       .read_text())["inputs"]["models"]["policy"] for d in ("own", "swapped")]
    assert keys[0] != keys[1] and keys[1][0] == str(models / "policy")  # a swapped policy is its own cell
    for extra, message in (((models / "gc",), "goal images (a GC policy"),
                           ((tmp_path / "nope",), "does not exist"),
                           ((models / "policy", "--dynamics", models / "dynamics"), "apply to --env calvin only")):
        bad = dynaguide(*common, "--policy", *extra, "--out-dir", tmp_path / "bad", check=False)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
    bad = dynaguide("experiment", "underrepresented_behaviors", "--preset", "tiny", "--models-dir", models,
                    "--policy", models / "policy", "--out-dir", tmp_path / "bad", check=False)
    assert bad.returncode == 2 and "run it without --policy" in bad.stderr


@pytest.mark.slow
def test_underrepresented_behaviour_trains_its_reduced_policy(tiny_demo, tmp_path):
    models, _ = tiny_demo
    out = dynaguide("experiment", "underrepresented_behaviors", "--preset", "tiny", "--models-dir", models,
                    "--targets", "switch_on_40pct", "--methods", "base", "--rollouts", "1", "--out-dir",
                    tmp_path / "rare", "--quiet").stdout
    assert "switch_on cut to 40% of its segments" in out
    info = json.loads((models / "policy_switch_on_40pct" / "variant.json").read_text())["info"]["reduced"]
    assert 1 <= info["kept"] <= info["of"]
    results = json.loads((tmp_path / "rare" / "results.json").read_text())
    assert results["config"]["policy_variants"] == {"switch_on_40pct": "switch_on_40pct"}
    (key_dir,) = (tmp_path / "rare" / "cells" / "base" / "switch_on_40pct").iterdir()
    inputs = json.loads((key_dir / "cell.json").read_text())["inputs"]
    variant_key = json.loads((models / "policy_switch_on_40pct" / "variant.json").read_text())["key"]
    full_policy = json.loads((models / "policy" / "stage.json").read_text())["key"]
    assert inputs["models"]["policy"] != full_policy and variant_key["reduce"] == ["switch_on", 0.4]
    assert (tmp_path / "rare" / "success_vs_data.png").stat().st_size > 5_000


@pytest.mark.slow
def test_closed_loop_sweep_runs_the_grid_in_one_program(tiny_demo, tmp_path):
    models, _ = tiny_demo
    out = dynaguide("sweep", "--preset", "tiny", "--models-dir", models, "--target", "door_left", "--scales", "0",
                    "2", "--repeats", "1", "2", "--sigmas", "30", "--rollouts", "2", "--out-dir", tmp_path, "--quiet")
    assert "4 grid points x 2 rollouts" in out.stdout
    result = json.loads((tmp_path / "sweep.json").read_text())
    grid = [(r["scale"], r["repeats"], r["sigma"]) for r in result["rows"]]
    assert grid == [(0.0, 1, 30.0), (0.0, 2, 30.0), (2.0, 1, 30.0), (2.0, 2, 30.0)]
    assert all(r["sigma_applied"] == 3.75 for r in result["rows"])  # 28 px: 4 patches of 384, 30 x sqrt(4 / 256)
    assert all(r["n"] == 2 and sum(r["distribution"].values()) == pytest.approx(1.0) for r in result["rows"])
    assert (tmp_path / "sweep.png").stat().st_size > 5_000
    bad = dynaguide("sweep", "--sigmas", "0", "--out-dir", tmp_path / "bad", check=False)
    assert bad.returncode == 2 and "sigmas must be > 0" in bad.stderr and not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_eval_policy_reports_open_and_closed_loop_imitation_of_the_demo_policy(tiny_demo, tmp_path):
    models, _ = tiny_demo
    out = dynaguide("eval", "policy", "--demo-dir", models, "--windows", "64", "--fractions", "0", "0.5",
                    "--horizon", "28", "--repeats", "1", "--out", tmp_path / "ev").stdout
    assert "| all | 64 |" in out and "| 0.50 |" in out
    report = json.loads((tmp_path / "ev" / "eval_policy.json").read_text())
    assert report["split"] == "validation" and report["open_loop"]["overall"]["n"] == 64
    assert -1 <= report["open_loop"]["overall"]["cosine_to_demo"] <= 1
    rows = report["completion"]["by_fraction"]
    assert [r["fraction"] for r in rows] == [0.0, 0.5]
    assert rows[0]["n"] == report["completion"]["segments"] > 0
    assert (tmp_path / "ev" / "eval_policy.png").stat().st_size > 10_000
    gc = dynaguide("eval", "policy", "--demo-dir", models, "--run", models / "gc", "--out", tmp_path / "gc",
                   check=False)
    assert gc.returncode == 2 and "goal-conditioned policy" in gc.stderr
    missing = dynaguide("eval", "policy", "--demo-dir", tmp_path / "nowhere", "--out", tmp_path / "m", check=False)
    assert missing.returncode == 2 and "no finished policy stage" in missing.stderr
    for flags, msg in ((("--horizon", "0"), "--horizon must be >= 1"),
                       (("--fractions", "0.5", "1"), r"--fractions must be in [0, 1), got [1.0]")):
        bad = dynaguide("eval", "policy", "--demo-dir", models, *flags, "--out", tmp_path / "b", check=False)
        assert bad.returncode == 2 and msg in bad.stderr and not (tmp_path / "b").exists()


@pytest.mark.skipif(CALVIN_SKIP is not None, reason=CALVIN_SKIP or "")
def test_experiment_in_the_real_calvin_simulator(tiny_demo, tmp_path):
    models, _ = tiny_demo
    poses = tmp_path / "poses"
    poses.mkdir()
    (poses / "initial_calvin_robot_states_right_side_midpoint.json").write_text(
        json.dumps({"robot_states": [ROBOT.tolist()] * 3}))
    out = dynaguide("experiment", "articulated_parts", "--env", "calvin", "--preset", "tiny", "--policy",
                    models / "policy", "--reset-poses-dir", poses, "--targets", "switch_on", "--methods", "base",
                    "--rollouts", "2", "--workers", "2", "--out-dir", tmp_path / "out", "--quiet").stdout
    assert "ArticulatedParts (tiny preset, calvin)" in out
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["config"]["env"] == "calvin" and results["methods"]["base"]["per_target"]["switch_on"]["n"] == 2
    # DynaGuide in the simulator: the demo's dynamics model with its (saved) random encoder and goal files
    from dynaguide_jax.demo.pipeline import demo_encoder
    from dynaguide_jax.encoders.convert import save_dinov2

    enc, enc_params, _ = demo_encoder(DemoConfig.for_preset("tiny"))
    save_dinov2(tmp_path / "encoder", enc, enc_params)
    out = dynaguide("experiment", "articulated_parts", "--env", "calvin", "--preset", "tiny", "--policy",
                    models / "policy", "--dynamics", models / "dynamics", "--encoder", tmp_path / "encoder",
                    "--goals-dir", models / "goals", "--reset-poses-dir", poses, "--targets", "switch_on",
                    "--methods", "dynaguide", "--rollouts", "2", "--workers", "2", "--out-dir", tmp_path / "guided",
                    "--quiet").stdout
    guided = json.loads((tmp_path / "guided" / "results.json").read_text())
    assert guided["methods"]["dynaguide"]["per_target"]["switch_on"]["n"] == 2 and "switch_on" in out
    assert guided["config"]["goal_counts"]["switch_on"]["positive"] >= 1


@pytest.mark.slow
def test_guidance_effect_scores_base_gpc_and_guided_chunks(tiny_demo, tmp_path):
    """benchmarks/guidance_effect.py on the tiny demo: with scale 0 and one repeat the guided sampler draws the
    base chunk of the same key (nothing moved, the same d); a scale moves it; bad input exits 2."""
    from dynaguide_jax.demo.pipeline import TARGETS

    out_dir, _ = tiny_demo
    module = _benchmark("guidance_effect")
    rows = module.guidance_effect(str(out_dir), [0.0, 50.0], samples=2, repeats=1, log=lambda *_: None)
    assert [r["target"] for r in rows] == list(TARGETS)
    for r in rows:
        assert r["rollouts"] == 2 and r["d_best_of_samples"] >= max(r["d_gpc_pick"], r["d_base"]) - 1e-6
        assert r["dynaguide"]["0.0"]["moved"] < 1e-6
        assert r["dynaguide"]["0.0"]["d"] == pytest.approx(r["d_base"], abs=1e-5)
    assert any(r["dynaguide"]["50.0"]["moved"] > 1e-3 for r in rows)
    for r in rows:  # where the chunks go: the same chunk at scale 0 goes the same way
        assert r["dynaguide"]["0.0"]["toward"] == pytest.approx(r["toward_base"], abs=1e-5)
        assert all(-1 - 1e-6 <= r[k] <= 1 + 1e-6 for k in ("toward_base", "toward_gpc_pick", "toward_itps"))
    assert "| target | d base (sd over samples) |" in module.format_table(rows, [0.0, 50.0])
    assert "| **mean** |" in module.format_toward(rows, [0.0, 50.0])
    assert module.main(["--demo-dir", str(tmp_path), "--samples", "1"]) == 2  # no demo there
    assert module.main(["--demo-dir", str(out_dir), "--samples", "0"]) == 2
    assert module.main(["--demo-dir", str(out_dir), "--sigma", "0"]) == 2


def _benchmark(name: str):
    """The module ``benchmarks/<name>.py`` (a script folder, not a package)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_oracle_steering_picks_chunks_by_their_true_outcome():
    """benchmarks/oracle_steering.py's oracle: of scripted chunks executed in a copy of the world, the one that
    does the target wins; one that does another behaviour loses to doing nothing; with reach, the one that
    approaches the part wins among those that do nothing; one sample is the policy's own draw."""
    from jax.flatten_util import ravel_pytree

    from dynaguide_jax.envs import tabletop
    from dynaguide_jax.eval.behaviours import BEHAVIOURS

    oracle = _benchmark("oracle_steering")
    env = tabletop.TabletopConfig.small()
    s0 = tabletop.reset(jax.random.key(0), env)
    robot, scene = tabletop.robot_obs(s0), tabletop.scene_obs(s0).at[0].set(0.0)  # the door closed (right)
    handle = tabletop.door_handle(jnp.float32(0.0))

    def state_at(xyz):
        return tabletop.reset(jax.random.key(0), env, robot_obs=robot.at[:3].set(xyz), scene_obs=scene)

    def move(axis, sign):  # 16 actions at full speed along one axis, gripper open
        return jnp.zeros((16, 7)).at[:, axis].set(sign).at[:, 6].set(1.0)

    left, up, still, forward = move(0, -1.0), move(2, 1.0), jnp.zeros((16, 7)).at[:, 6].set(1.0), move(1, 1.0)

    elsewhere = ravel_pytree(state_at(jnp.asarray([0.2, -0.25, 0.65])))[0]  # the older frame: far from every part

    def choose(state, chunks, target, score, samples=8):
        options = jnp.stack(chunks)

        def sample_fn(obs_stack, key):  # a scripted "policy": one of the options, by key
            return options[jax.random.randint(key, (), 0, len(chunks))][None]

        flat, unravel = ravel_pytree(state)
        fn = oracle.oracle_fn(sample_fn, env, BEHAVIOURS.index(target), tabletop.PARTS.index(target.split("_")[0]),
                              unravel, samples=samples, first=1, executed=14, score=score)
        key = jax.random.key(3)
        stack = {"world": jnp.stack([elsewhere, flat])[None]}  # [N = 1, To = 2, F]: the newest frame last
        return np.asarray(fn(stack, key)[0]), np.asarray(sample_fn(None, key)[0])

    at_handle = state_at(handle)
    for score in oracle.SCORES:
        picked, _ = choose(at_handle, [up, left, still], "door_left", score)
        np.testing.assert_array_equal(picked, left)  # drags the door left: the target
        picked, _ = choose(at_handle, [left, up], "door_right", score)
        np.testing.assert_array_equal(picked, up)  # door_left would end the rollout: doing nothing is better
    in_front = state_at(handle - jnp.asarray([0.0, 0.06, 0.0]))  # 6 cm in front of the handle
    picked, _ = choose(in_front, [up, still, forward], "door_left", "outcome+reach")
    np.testing.assert_array_equal(picked, forward)  # nothing happens in any; forward reaches the handle
    picked, own = choose(in_front, [up, still, forward], "door_left", "outcome", samples=1)
    np.testing.assert_array_equal(picked, own)  # K = 1: the policy's own draw
    with pytest.raises(ValueError, match="score must be one of"):
        oracle.oracle_fn(None, env, 0, 0, None, samples=2, first=1, executed=14, score="reward")


@pytest.mark.slow
def test_oracle_steering_with_one_sample_is_the_base_policy(tiny_demo, tmp_path):
    """On the tiny demo the oracle with K = 1 replays the base policy's rollouts (the same starts and keys),
    more samples give a table; bad input exits 2."""
    from dynaguide_jax.demo.pipeline import TARGETS

    out_dir, _ = tiny_demo
    oracle = _benchmark("oracle_steering")
    rows = oracle.oracle_steering(str(out_dir), [1, 3], "outcome+reach", log=lambda *_: None)
    base = np.load(out_dir / "eval" / "methods" / "base.npy")  # [targets, rollouts] detected behaviours
    for i, t in enumerate(TARGETS):
        assert rows[0]["per_target"][t]["detected"] == base[i].tolist(), t  # rollout for rollout
    assert rows[1]["samples"] == 3 and all(r["n"] == 2 for r in rows[1]["per_target"].values())
    assert "| best of 3 (outcome+reach) |" in oracle.format_table(rows)
    assert oracle.main(["--demo-dir", str(tmp_path), "--samples", "1"]) == 2  # no demo there
    assert oracle.main(["--demo-dir", str(out_dir), "--samples", "0"]) == 2
