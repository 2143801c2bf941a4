"""Offline dynamics evaluation: action transforms recorded with a run, segment queries, leave-one-out
behaviour retrieval, and `dynaguide eval dynamics` as a user calls it."""
import json

import jax
import numpy as np
import pytest

from dynaguide_jax.data import ActionTransform, DynamicsWindows, EpisodeData
from dynaguide_jax.data.episodes import split_at_segments
from dynaguide_jax.dynamics import DynamicsConfig, init_dynamics, predict_future_patches
from dynaguide_jax.eval.dynamics import (action_use, behaviour_scores, evaluate_dynamics, format_report,
                                         segment_queries)
from tests.test_cli import dynaguide


def test_action_transforms_and_their_round_trip():
    a = np.array([[-3.0, 0.5], [2.0, 0.25], [1.0, 0.0]], np.float32)
    np.testing.assert_array_equal(ActionTransform("clip")(a), [[-1, 0.5], [1, 0.25], [1, 0]])
    np.testing.assert_array_equal(ActionTransform()(a), a)
    mm = ActionTransform.fit("minmax", a)
    out = mm(a)
    np.testing.assert_allclose(out.min(0), -1)
    np.testing.assert_allclose(out.max(0), 1)
    back = ActionTransform.from_dict(json.loads(json.dumps(mm.to_dict())))
    assert back == mm
    np.testing.assert_array_equal(back(a), out)
    with pytest.raises(ValueError, match="action mode must be one of"):
        ActionTransform("zscore")
    with pytest.raises(ValueError, match="only with"):
        ActionTransform("clip", scale=(1.0,), offset=(0.0,))


def labelled_episodes():
    """Two episodes (30 and 25 frames); segment ids restart per episode; frames 0-4 unlabelled."""
    labels = np.array([""] * 5 + ["a"] * 10 + ["b"] * 15 + ["a"] * 12 + [""] * 3 + ["b"] * 10)
    segments = np.r_[[-1] * 5, [0] * 10, [1] * 15, [0] * 12, [-1] * 3, [1] * 10]
    data = EpisodeData(obs={"proprio": np.zeros((55, 2), np.float32)}, actions=np.zeros((55, 3), np.float32),
                       episode_ends=np.array([30, 55]))
    return data, labels, segments


def labelled_segments():
    """The same frames cut at segments (CALVIN's split-wide ids): episodes 0-4, 5-14, 15-29, 30-41,
    42-44, 45-54; labelled segment ends 14, 29, 41, 54, starts 5, 15, 30, 45."""
    data, labels, _ = labelled_episodes()
    segments = np.r_[[-1] * 5, [0] * 10, [1] * 15, [2] * 12, [-1] * 3, [3] * 10]
    return split_at_segments(data, segments), labels, segments


def test_segment_queries_take_each_segment_end_and_the_window_before_it():
    data, labels, segments = labelled_episodes()
    w = DynamicsWindows(data, np.zeros((55, 1, 1), np.float32), horizon=8, proprio_key=None, target="horizon")
    last, names, seg, start = segment_queries(w, labels, segments)
    np.testing.assert_array_equal(last, [14, 29, 41, 54])
    assert list(names) == ["a", "b", "a", "b"]
    assert len(set(seg.tolist())) == 4  # per-episode ids made global
    np.testing.assert_array_equal(start, [6, 21, 33, 46])
    w16 = DynamicsWindows(data, np.zeros((55, 1, 1), np.float32), horizon=16, proprio_key=None, target="horizon")
    assert segment_queries(w16, labels, segments)[3][0] == -1  # the window would start before the episode


def test_segment_end_queries_start_h_before_the_end_or_at_the_segment_start():
    data, labels, segments = labelled_segments()
    w = DynamicsWindows(data, np.zeros((55, 1, 1), np.float32), horizon=16, proprio_key=None)
    last, names, _, start = segment_queries(w, labels, segments)
    np.testing.assert_array_equal(last, [14, 29, 41, 54])
    np.testing.assert_array_equal(start, [5, 15, 30, 45])  # all segments are shorter than H = 16
    np.testing.assert_array_equal(w.target_frame(start), last)
    w4 = DynamicsWindows(data, np.zeros((55, 1, 1), np.float32), horizon=4, proprio_key=None)
    np.testing.assert_array_equal(segment_queries(w4, labels, segments)[3], [10, 25, 37, 50])
    # play-range episodes are not segments: a segment_end window there would predict another frame
    whole, labels, segments = labelled_episodes()
    w = DynamicsWindows(whole, np.zeros((55, 1, 1), np.float32), horizon=16, proprio_key=None)
    np.testing.assert_array_equal(segment_queries(w, labels, segments)[3], [-1, 15, -1, 45])


def test_retrieval_leaves_the_query_segment_out_and_normalises_set_size():
    goals = np.array([[0.0], [10.0], [10.5], [11.0], [11.5]], np.float32)
    labels = np.array(["a", "b", "b", "b", "b"])
    segs = np.arange(5)
    # query 0 sits on its own segment's goal: without leave-one-out "a" would win trivially
    q = np.array([[0.0], [10.2]], np.float32)
    s = behaviour_scores(q, np.array([0, 1]), goals, labels, segs, ["a", "b"], sigma=1.0)
    assert s[0, 0] == -np.inf and s[1].argmax() == 1
    # log-mean-exp: four equally far goals score like one goal at that distance
    s = behaviour_scores(np.array([[5.0]], np.float32), np.array([-9]), np.array([[0.0], [10.0], [10.0], [10.0],
                         [10.0]], np.float32), labels, segs, ["a", "b"], sigma=1.0)
    np.testing.assert_allclose(s[0, 0], s[0, 1], atol=1e-5)


def test_evaluate_dynamics_errors_and_retrieval_on_a_model():
    rng = np.random.default_rng(0)
    cfg = DynamicsConfig(feature_dim=8, patches_per_camera=4, action_dim=3, horizon=4, proprio_dim=2,
                         num_layers=1, num_heads=2, ffn_dim=16)
    params = init_dynamics(cfg, jax.random.key(0))
    data, labels, segments = labelled_segments()
    feats = rng.normal(0, 0.1, size=(55, 4, 8)).astype(np.float32)
    feats[[14, 41]], feats[[29, 54]] = 5.0, -5.0  # segment ends: "a" near +5, "b" near -5
    feats[[10, 37]], feats[[25, 50]] = -5.0, 5.0  # query frames (H = 4 before the end) look like the OTHER end
    data.actions[:] = rng.uniform(-2, 2, data.actions.shape)
    w = DynamicsWindows(data, feats, horizon=4, action_transform=ActionTransform("clip"))
    rep = evaluate_dynamics(cfg, params, w, labels=labels, segments=segments, max_windows=10, batch_size=4,
                            progress=False)
    assert rep["windows"] == 10 and rep["target"] == "segment_end"
    t = w.valid[np.linspace(0, len(w.valid) - 1, 10).round().astype(int)]
    b = w.at(t)
    assert np.abs(b["actions"]).max() <= 1.0
    pred = np.asarray(predict_future_patches(cfg, params, b["patches"], b["proprio"], b["actions"]))
    np.testing.assert_allclose(rep["per_window_mse"], ((pred - b["future_patches"]) ** 2).mean((1, 2)), atol=1e-5)
    np.testing.assert_allclose(rep["mse_current_frame"], ((b["patches"] - b["future_patches"]) ** 2).mean(),
                               rtol=1e-4)
    r = rep["retrieval"]
    assert r["classes"] == ["a", "b"] and r["queries"] == 4 and r["chance"] == 0.5
    assert np.asarray(r["confusion_prediction"]).sum() == 4
    # the true future of a query is its own segment end, which is left out; the other segment of
    # its behaviour ends at the same features, so the true future always retrieves the right one,
    # while each query's current frame always points to the other
    assert r["accuracy_true_future"] == 1.0 and r["accuracy_current_frame"] == 0.0
    rep = evaluate_dynamics(cfg, params, w, max_windows=None, progress=False)
    assert rep["windows"] == len(w.valid) and "no behaviour labels" in rep["retrieval"]["skipped"]
    one = np.where(labels == "b", "", labels)
    r = evaluate_dynamics(cfg, params, w, labels=one, segments=segments, progress=False)["retrieval"]
    assert "needs >= 2 behaviours" in r["skipped"] and r["segments"] == {"a": 2}


def test_action_use_queries_each_segment_at_its_phases_with_own_and_other_chunks():
    rng = np.random.default_rng(1)
    cfg = DynamicsConfig(feature_dim=8, patches_per_camera=4, action_dim=3, horizon=4, proprio_dim=2,
                         num_layers=1, num_heads=2, ffn_dim=16)
    params = init_dynamics(cfg, jax.random.key(0))
    data, labels, segments = labelled_segments()  # segments 5-14 a, 15-29 b, 30-41 a, 45-54 b
    feats = rng.normal(0, 0.1, size=(55, 4, 8)).astype(np.float32)
    feats[[14, 41]], feats[[29, 54]] = 5.0, -5.0  # segment ends: "a" near +5, "b" near -5
    feats[[5, 30]], feats[[15, 45]] = 5.0, -5.0  # first frames (phase 0) look like their OWN end
    feats[[10, 36]], feats[[22, 50]] = -5.0, 5.0  # halfway (first + floor(len / 2)) like the OTHER end
    data.actions[:] = rng.uniform(-1, 1, data.actions.shape)
    w = DynamicsWindows(data, feats, horizon=4)
    u = action_use(cfg, params, w, labels, segments, sigma=1.0, phases=(0.0, 0.5))
    assert u["classes"] == ["a", "b"] and u["chance"] == 0.5
    first, half = u["phases"]
    assert first["queries"] == half["queries"] == 4
    assert first["accuracy_current_frame"] == 1.0 and half["accuracy_current_frame"] == 0.0
    assert first["accuracy_true_future"] == half["accuracy_true_future"] == 1.0
    assert first["swap_change_over_error"] > 0  # a random model's prediction moves with the chunk
    # a model blind to the actions: another behaviour's chunk predicts exactly the same
    blind = jax.tree.map(lambda x: x, params)
    blind["action_embedder"] = jax.tree.map(np.zeros_like, params["action_embedder"])
    for row in action_use(cfg, blind, w, labels, segments, sigma=1.0, phases=(0.0, 0.5))["phases"]:
        assert row["swap_change_over_error"] == 0.0
        assert row["accuracy_own_actions"] == row["accuracy_other_actions"]
    # the report carries it, the text and the plot show it; bad phases fail before any work
    rep = evaluate_dynamics(cfg, params, w, labels=labels, segments=segments, progress=False, phases=(0.0, 0.5))
    assert [row["phase"] for row in rep["action_use"]["phases"]] == [0.0, 0.5]
    assert "another behaviour's" in format_report(rep) and "0.50" in format_report(rep)
    with pytest.raises(ValueError, match=r"phases must be fractions of a segment in \[0, 1\)"):
        evaluate_dynamics(cfg, params, w, labels=labels, segments=segments, progress=False, phases=(1.0,))
    # play-range episodes: only the two "b" segments end their windows' episodes, so no donor of another behaviour
    whole, labels_w, segments_w = labelled_episodes()
    w_whole = DynamicsWindows(whole, feats, horizon=4)
    assert "needs segments of >= 2 behaviours" in action_use(cfg, params, w_whole, labels_w, segments_w, 1.0)["skipped"]
    assert "skipped" in evaluate_dynamics(cfg, params, w_whole, labels=labels_w, segments=segments_w,
                                          progress=False)["action_use"]
    horizon = DynamicsWindows(data, feats, horizon=4, target="horizon")
    assert "segment_end" in action_use(cfg, params, horizon, labels, segments, sigma=1.0)["skipped"]


@pytest.mark.slow
def test_cli_eval_dynamics_on_held_out_toy_episodes(tmp_path, capsys):
    from dynaguide_jax.cli import main

    run = tmp_path / "dyn"
    # the training and the bad inputs in-process, through the command's entry point; the eval as the real command
    assert main(["train", "dynamics", "--out", str(run), "--steps", "150", "--episodes", "32", "--quiet"]) == 0
    info = json.loads((run / "config.json").read_text())["data"]
    assert info["source"] == "toy" and info["action_transform"]["mode"] == "none"
    out = dynaguide("eval", "dynamics", "--run", run, "--episodes", "16", "--quiet").stdout
    assert "skill vs. baseline" in out and "from the prediction" in out and "another behaviour's" in out
    rep = json.loads((run / "eval" / "eval_dynamics.json").read_text())
    assert rep["mse"] < rep["mse_current_frame"]  # even a short run beats "nothing moves"
    assert rep["retrieval"]["queries"] == 16 and rep["retrieval"]["accuracy_prediction"] > 0.5
    assert [row["phase"] for row in rep["action_use"]["phases"]] == [0.0, 0.25, 0.5, 0.75]
    assert (run / "eval" / "eval_dynamics.png").stat().st_size > 10_000
    capsys.readouterr()
    assert main(["eval", "dynamics", "--run", str(tmp_path / "nothing")]) == 2
    assert "nothing: no such dynamics run directory" in capsys.readouterr().err
    assert main(["eval", "dynamics", "--run", str(run), "--data", "rlds"]) == 2
    assert "--features" in capsys.readouterr().err


def test_bad_dynamics_run_directories_are_named(tmp_path):
    """``load_trained_dynamics``: every broken run directory is one error naming the path, and
    nothing is created on the way."""
    import dataclasses

    from dynaguide_jax.training import DynamicsTrainConfig
    from dynaguide_jax.training.loop import load_trained_dynamics

    with pytest.raises(FileNotFoundError, match=r"nope: no such dynamics run directory"):
        load_trained_dynamics(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(FileNotFoundError, match=r"run/config.json is missing: .* `dynaguide train dynamics` run"):
        load_trained_dynamics(run)
    good = json.dumps({"dynamics": DynamicsConfig.preset("small").to_dict(),
                       "train": dataclasses.asdict(DynamicsTrainConfig())})
    for text, why in (("[1", "Expecting"), (json.dumps({"dynamics": {}}), r"lacks \['train'\]"),
                      (good.replace('"ffn_dim"', '"ffn_dimm"'), "ffn_dimm")):
        (run / "config.json").write_text(text)
        with pytest.raises(ValueError, match=rf"run/config.json: not a dynamics run config \(.*{why}"):
            load_trained_dynamics(run)
    (run / "config.json").write_text(good)
    with pytest.raises(FileNotFoundError, match=r"run/checkpoints is missing: the run .* never saved a checkpoint"):
        load_trained_dynamics(run)
    assert not (run / "checkpoints").exists()
    (run / "checkpoints").mkdir()
    with pytest.raises(FileNotFoundError, match=r"run/checkpoints holds no complete checkpoint"):
        load_trained_dynamics(run)
