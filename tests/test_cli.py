"""The ``dynaguide`` command, called as a user would (subprocess), or in-process through ``main`` where that
is enough (error handling, argument checks, small runs)."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch

from dynaguide_jax.cli import bench, build_parser, main
from dynaguide_jax.cli.parser_tree import shown_default, walk
from dynaguide_jax.encoders import load_dinov2
from tests.oracles.dinov2_hub import HubDinoV2, randomize_
from tests.test_dynamics import small_oracle

ENV = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")


def dynaguide(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "dynaguide_jax.cli", *map(str, args)], capture_output=True,
                          text=True, env=ENV, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def run_main(argv, capsys):
    """``main(argv)`` in-process: (exit status, stdout, stderr); argparse's --help and usage errors exit."""
    try:
        code = main(list(map(str, argv)))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_help_everywhere(capsys):
    assert "demo" in dynaguide("--help").stdout  # the real command, once; the rest in-process (same parser)
    for sub in (["demo"], ["experiment"], ["sweep"], ["convert"], ["convert", "dinov2"], ["convert", "dynamics"],
                ["bench"], ["train"], ["train", "policy"], ["train", "dynamics"], ["data"], ["data", "build"],
                ["data", "cache"], ["data", "goals"], ["data", "reset-poses"], ["data", "play"], ["eval"],
                ["eval", "dynamics"], ["eval", "policy"]):
        code, out, _ = run_main([*sub, "--help"], capsys)
        assert code == 0 and out.startswith(f"usage: dynaguide {sub[0]}"), sub
    code, experiment_help, _ = run_main(["experiment", "--help"], capsys)
    for choices in ("{articulated_parts,movable_objects,multi_objectives,underrepresented_behaviors,"
                    "underspecified_objectives}", "{tabletop,calvin}", "{tiny,small,paper}"):
        assert choices in experiment_help
    code, _, err = run_main(["eval"], capsys)  # no subcommand: name the choices, not an internal name
    assert code == 2 and "required: {dynamics,policy}" in err
    # every option of every (sub)command and benchmark: its allowed values and its default in --help
    parsers = [(" ".join(("dynaguide", *path)), p) for path, p in walk(build_parser())]
    parsers += [(name, make()) for name, make in bench.PARSERS.items()]
    assert len(parsers) == 24  # dynaguide, 19 subcommands, 4 benchmarks
    for name, parser in parsers:
        text, formatter = parser.format_help(), parser._get_formatter()
        for action in parser._actions:
            for choice in action.choices or ():
                assert str(choice) in text, (name, action.dest, choice)
            default = shown_default(action)
            if default is not None:
                help_text = formatter._expand_help(action) if action.help else ""
                assert "default" in help_text and default.split()[0] in help_text, (name, action.dest, help_text)


def test_debug_raises_what_is_otherwise_one_line(tmp_path, capsys):
    bad = ["--out", tmp_path, "--streams", "2", "--validation-streams", "2"]
    assert main(["data", "play", *map(str, bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dynaguide data: error: --validation-streams 2 must be less than --streams 2") and \
        "Traceback" not in err
    for argv in (["--debug", "data", "play", *bad], ["data", "play", "--debug", *bad]):  # before or after
        with pytest.raises(ValueError, match="--validation-streams 2 must be less than --streams 2"):
            main(list(map(str, argv)))


def test_data_play_writes_raw_calvin(tmp_path, capsys):
    from data_pipelines.calvin.raw import episode_ranges, language_by_frame, read_frame

    out = tmp_path / "raw"
    args = ["data", "play", "--out", out, "--streams", "2", "--steps", "40", "--validation-streams", "1",
            "--image-size", "16", "--seed", "3", "--block-weight", "0.5", "--perturb", "0.1", "--quiet"]
    assert main(list(map(str, args))) == 0
    assert f"next: dynaguide data build calvin {out}" in capsys.readouterr().out
    summary = json.loads((out / "play_config.json").read_text())
    assert summary["seed"] == 3 and summary["config"]["num_streams"] == 2 and summary["config"]["steps"] == 40
    assert summary["config"]["perturb_rate"] == 0.1
    weights = summary["config"]["weights"]  # the articulated parts 1, the blocks' lift and push 0.5
    assert len(weights) == 14 and all(w == (0.5 if b.endswith(("_lift", "_push")) else 1.0) for b, w in weights.items())
    for split, first in (("training", 0), ("validation", 40)):  # frame ids continue into validation
        d = str(out / split)
        ranges = episode_ranges(d)
        assert ranges[0, 0] == first and ranges[-1, 1] == first + 39
        frame = read_frame(d, first + 5)
        assert frame["rgb_static"].shape == (16, 16, 3) and frame["rgb_gripper"].shape == (8, 8, 3)
        assert frame["rel_actions"].shape == (7,) and frame["robot_obs"].shape == (15,)
        assert isinstance(language_by_frame(d), dict)
    assert main(list(map(str, args))) == 0  # an earlier play is replaced
    assert sorted(os.listdir(out)) == ["play_config.json", "training", "validation"]


@pytest.mark.parametrize("flags, message", [
    (["--image-size", "31"], "--image-size must be even"),
    (["--streams", "2", "--validation-streams", "3"], "--validation-streams 3 must be less than --streams 2"),
    (["--out", "{tmp}/taken"], "holds other files: pass a new or empty directory"),
    (["--out", "{tmp}/taken/file.txt"], "is a file, not a directory"),
    (["--steps", "0"], "argument --steps: expected an integer >= 1, got '0'"),
    (["--image-size", "8"], "argument --image-size: expected an integer >= 16, got '8'"),
    (["--seed", "x"], "argument --seed: invalid int value"),
    (["--block-weight", "-1"], "--block-weight must be a finite number >= 0"),
    (["--perturb", "1.5"], "--perturb must be a probability in [0, 1]"),
])
def test_data_play_rejects_bad_input(tmp_path, capsys, flags, message):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file.txt").write_text("mine")
    argv = ["data", "play", "--quiet", "--out", str(tmp_path / "new"), *(f.format(tmp=tmp_path) for f in flags)]
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own checks
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert (tmp_path / "taken" / "file.txt").read_text() == "mine" and not (tmp_path / "new").exists()


def test_convert_dinov2_hub_file(tmp_path):
    torch.manual_seed(0)
    oracle = randomize_(HubDinoV2(img_size=42, dim=32, depth=1, heads=2).eval())
    torch.save(oracle.state_dict(), tmp_path / "hub.pth")
    out = dynaguide("convert", "dinov2", tmp_path / "hub.pth", tmp_path / "conv", "--num-heads", "2").stdout
    assert "hidden_size" in out
    cfg, params = load_dinov2(tmp_path / "conv")
    _, direct = load_dinov2(tmp_path / "hub.pth", num_heads=2)
    assert cfg.num_heads == 2
    jax.tree.map(np.testing.assert_array_equal, params, direct)
    proc = dynaguide("convert", "dinov2", tmp_path / "missing.pth", tmp_path / "x", check=False)
    assert proc.returncode == 2 and "no DinoV2 weights" in proc.stderr


def test_convert_dynamics_checkpoint(tmp_path):
    torch.save(small_oracle().state_dict(), tmp_path / "dyn.pth")
    dynaguide("convert", "dynamics", tmp_path / "dyn.pth", tmp_path / "conv", "--patches-per-camera", "16",
              "--encoder-num-heads", "2")
    from dynaguide_jax.dynamics import load_dynamics

    cfg, params = load_dynamics(tmp_path / "conv" / "dynamics")
    assert cfg.num_layers == 2 and cfg.patches_per_camera == 16
    assert params["pos_embedding"].shape == (1, 18, 32)
    with pytest.raises(ValueError, match="not a dynamics model"):
        load_dynamics(tmp_path / "conv" / "encoder")
    assert load_dinov2(tmp_path / "conv" / "encoder")[0].hidden_size == 32


def test_bench_small_prints_json_lines():
    out = dynaguide("bench", "--preset", "small", "--batch-sizes", "1", "--dtypes", "float32", "--quick", "true").stdout
    rows = [json.loads(line) for line in out.splitlines()]
    assert {r["bench"] for r in rows} == {"guided_chunk", "unguided_chunk", "policy_unguided_chunk",
                                          "policy_guided_chunk", "policy_train_step"}
    assert all(r.get("latency_ms", r.get("step_ms")) > 0 and r["platform"] == "cpu" for r in rows)
