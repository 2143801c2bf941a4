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
from dynaguide_jax.demo.stages import Stages
from dynaguide_jax.guidance import GoalSet, guidance_metric
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


def test_demo_config_presets_and_bad_settings():
    assert DemoConfig.for_preset("paper").rollouts == 100 and DemoConfig.for_preset("paper").horizon == 400
    assert DemoConfig.for_preset("tiny", rollouts=5).rollouts == 5
    for bad, match in [(dict(encoder_size=50), "multiple of 14"), (dict(rollouts=0), "rollouts=0"),
                       (dict(methods=("base", "magic")), "methods must be"), (dict(policy_obs="smell"), "policy_obs"),
                       (dict(validation_streams=8), "validation_streams"),
                       (dict(block_play_weight=-0.5), "block_play_weight"),
                       (dict(block_play_weight=float("nan")), "block_play_weight")]:
        with pytest.raises(ValueError, match=match):
            DemoConfig(**bad)
    with pytest.raises(ValueError, match="unknown preset"):
        DemoConfig.for_preset("huge")


def test_demo_cli_rejects_bad_flags_with_exit_2(tmp_path):
    proc = dynaguide("demo", "--encoder-size", "50", "--out-dir", tmp_path, check=False)
    assert proc.returncode == 2 and "multiple of 14" in proc.stderr and "Traceback" not in proc.stderr
    proc = dynaguide("demo", "--preset", "huge", check=False)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    help_text = dynaguide("demo", "--help").stdout
    assert "--preset {tiny,small,paper}" in help_text and "--fresh" in help_text and "--rollouts" in help_text


@pytest.mark.slow
def test_tiny_demo_writes_every_artefact_and_reuses_its_stages(tmp_path):
    out_dir = tmp_path / "demo"
    out = dynaguide("demo", "--preset", "tiny", "--out-dir", out_dir, "--quiet").stdout
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
    assert "| **mean** |" in (out_dir / "table.md").read_text()
    assert (out_dir / "table.csv").read_text().startswith("method,target,success,n,ci95_lo,ci95_hi,behaviour")
    assert (out_dir / "success.png").stat().st_size > 10_000
    gifs = sorted(os.listdir(out_dir / "eval" / "gifs"))
    assert len(gifs) == 5 and all(g.endswith(".gif") for g in gifs)
    for stage in ("play", "rlds", "features", "goals", "policy", "gc", "dynamics", "eval"):
        assert json.loads((out_dir / stage / "stage.json").read_text())["done"] is True
    # a rerun reuses every stage and reports the same numbers
    again = dynaguide("demo", "--preset", "tiny", "--out-dir", out_dir, "--quiet").stdout
    assert again.count("done earlier") == 8
    assert json.loads((out_dir / "results.json").read_text())["methods"] == results["methods"]
