"""UMI replay buffer -> RLDS: exact round trip (lossless JPEG-XL), episode boundaries, relative
actions, and clear errors for malformed buffers."""
import zipfile

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")
pytest.importorskip("zarr")
pytest.importorskip("imagecodecs")

from data_pipelines.umi.builder import build_umi  # noqa: E402
from data_pipelines.umi.raw import UmiFormatError  # noqa: E402
from dynaguide_jax.data.poses import absolute_from_relative, relative_actions  # noqa: E402
from tests.fixtures.umi_raw import write_umi  # noqa: E402


def test_relative_actions_round_trip_and_known_case():
    base = np.array([0.1, 0.2, 0.3, 0.0, 0.0, np.pi / 2])
    poses = np.array([[0.11, 0.2, 0.3, 0.0, 0.0, np.pi / 2], [0.1, 0.2, 0.35, 0.0, 0.3, np.pi / 2]])
    grip = np.array([[0.05], [0.02]])
    act = relative_actions(poses, grip, base)
    # +1 cm along world x is -1 cm along the base frame's y when the base is yawed by 90 degrees
    np.testing.assert_allclose(act[0, :3], [0.0, -0.01, 0.0], atol=1e-12)
    np.testing.assert_allclose(act[0, 3:9], [1, 0, 0, 0, 1, 0], atol=1e-12)
    back, g = absolute_from_relative(act, base)
    np.testing.assert_allclose(back, poses, atol=1e-10)
    np.testing.assert_array_equal(g, grip)


def test_pose_functions_reject_bad_shapes_and_nan():
    from dynaguide_jax.data.poses import pose_to_mat, relative, rot6d, rot6d_to_matrix
    base = np.array([0.1, 0.2, 0.3, 0.0, 0.0, np.pi / 2])
    poses, grip = np.tile(base, (2, 1)), np.zeros((2, 1))
    with pytest.raises(ValueError, match=r"poses must be \[T, 6\], got shape \(2, 7\)"):
        relative_actions(np.zeros((2, 7)), grip, base)
    with pytest.raises(ValueError, match=r"base_pose must be \[6\]"):
        relative_actions(poses, grip, poses)
    with pytest.raises(ValueError, match=r"gripper must be \[T=2\] or \[T, 1\]"):
        relative_actions(poses, np.zeros((3, 1)), base)
    with pytest.raises(FloatingPointError, match="poses contains 1 non-finite"):
        relative_actions(np.where(np.arange(12).reshape(2, 6) == 5, np.nan, poses), grip, base)
    with pytest.raises(FloatingPointError, match="gripper"):
        relative_actions(poses, np.full((2, 1), np.inf), base)
    with pytest.raises(ValueError, match=r"pose must be \[\.\.\., 6\]"):
        pose_to_mat(np.zeros(3))
    with pytest.raises(ValueError, match=r"base matrix must be \[\.\.\., 4, 4\]"):
        relative(np.eye(4), np.eye(3))
    with pytest.raises(ValueError, match=r"rot6d matrix must be"):
        rot6d(np.zeros((2, 6)))
    with pytest.raises(ValueError, match=r"zero or parallel \(first at index \(1,\)\)"):
        rot6d_to_matrix(np.array([[1, 0, 0, 0, 1, 0], [1, 0, 0, 2, 0, 0]], float))
    with pytest.raises(ValueError, match=r"actions10 must be \[\.\.\., 10\]"):
        absolute_from_relative(np.zeros((2, 9)), base)
    with pytest.raises(FloatingPointError, match="actions10"):
        absolute_from_relative(np.full((2, 10), np.nan), base)


def test_build_round_trip(tmp_path):
    images, arrays = write_umi(tmp_path / "dataset.zarr.zip")
    path = build_umi(str(tmp_path / "dataset.zarr.zip"), str(tmp_path / "rlds"))
    eps = []
    for ep in tfds.builder_from_directory(path).as_dataset(split="train"):
        eps.append((int(ep["episode_metadata"]["episode"]), list(ep["steps"].as_numpy_iterator())))
    eps.sort(key=lambda e: e[0])
    assert [len(s) for _, s in eps] == [12, 8]
    steps = [s for _, ep in eps for s in ep]
    np.testing.assert_array_equal(np.stack([s["observation"]["camera0_rgb"] for s in steps]), images)
    np.testing.assert_allclose(np.stack([s["observation"]["eef_pos"] for s in steps]), arrays["robot0_eef_pos"])
    np.testing.assert_allclose(np.stack([s["observation"]["gripper_width"] for s in steps]),
                               arrays["robot0_gripper_width"])
    first = eps[0][1]
    assert first[0]["is_first"] and first[-1]["is_last"] and sum(s["is_first"] for s in first) == 1
    np.testing.assert_allclose(first[3]["action"][:3], [0.0, -0.01, 0.0], atol=1e-6)  # yawed 90 degrees
    np.testing.assert_allclose(eps[1][1][3]["action"][:3], [0.01, 0.0, 0.0], atol=1e-6)  # not yawed
    np.testing.assert_allclose(first[5]["observation"]["eef_rot_wrt_start"], [1, 0, 0, 0, 1, 0], atol=1e-6)
    np.testing.assert_allclose(first[-1]["action"][:9], [0, 0, 0, 1, 0, 0, 0, 1, 0], atol=1e-6)  # last: stay


@pytest.mark.parametrize("case,match", [
    ("missing", r"data/ lacks \['robot0_eef_pos'\]"),
    ("shape", r"data/robot0_gripper_width has shape \(20, 2\)"),
    ("ends", r"meta/episode_ends must end at the 20 frames"),
    ("empty", r"episode 1 is empty"),
    ("notzip", r"unreadable"),
    ("corrupt", r"cannot decode data/camera0_rgb"),
])
def test_bad_buffers_fail_clearly_and_leave_no_dataset(tmp_path, case, match):
    f = tmp_path / "dataset.zarr.zip"
    if case == "missing":
        write_umi(f, drop=("robot0_eef_pos",))
    elif case == "shape":
        write_umi(f, arrays={"robot0_gripper_width": np.zeros((20, 2), np.float32)})
    elif case == "ends":
        write_umi(f, episode_ends=np.array([12, 19]))
    elif case == "empty":
        write_umi(f, episode_ends=np.array([12, 12, 20]))
    elif case == "notzip":
        f.write_bytes(b"not a zip file at all")
    else:
        write_umi(f)
        with zipfile.ZipFile(f) as z:
            items = {n: z.read(n) for n in z.namelist()}
        items["data/camera0_rgb/14.0.0.0"] = b"\x00garbage"
        with zipfile.ZipFile(f, "w") as z:
            for n, b in items.items():
                z.writestr(n, b)
    with pytest.raises(UmiFormatError, match=match):
        build_umi(str(f), str(tmp_path / "rlds"))
    assert not (tmp_path / "rlds" / "umi_rlds" / "1.1.0").exists()


def test_cli_builds_umi(tmp_path, capsys):
    import subprocess
    import sys

    from dynaguide_jax.cli import main
    from tests.test_cli import ENV

    write_umi(tmp_path / "dataset.zarr.zip")
    p = subprocess.run([sys.executable, "-m", "dynaguide_jax.cli", "data", "build", "umi", "--quiet",
                        str(tmp_path / "dataset.zarr.zip"), str(tmp_path / "rlds")], capture_output=True, text=True,
                       env=ENV, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "Generating splits" not in p.stderr  # --quiet: no TFDS progress bars (without it they show: CALVIN's test)
    ds = p.stdout.strip().split()[-1]
    assert ds.endswith("umi_rlds/1.1.0")
    # the later commands in-process, through the command's entry point (one jax start-up, not three)
    for args in (["data", "cache", ds, tmp_path / "feats", "--camera", "observation/camera0_rgb", "--quiet"],
                 ["train", "dynamics", "--data", "rlds", "--rlds", ds, "--features", tmp_path / "feats", "--model",
                  "small", "--horizon", "4", "--action-field", "action", "--proprio-fields", "observation/eef_pos",
                  "observation/eef_rot_axis_angle", "observation/gripper_width", "--steps", "2", "--global-batch",
                  "4", "--out", tmp_path / "dyn", "--quiet"]):
        assert main(list(map(str, args))) == 0, capsys.readouterr().err[-2000:]
    assert (tmp_path / "dyn" / "checkpoints" / "2").exists()
    capsys.readouterr()
    assert main(["data", "build", "umi", str(tmp_path / "nope.zip"), str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_episodes_read_back_in_source_order(tmp_path):
    from dynaguide_jax.data.rlds import iterate_episodes

    lengths = (3, 5, 2, 4, 3, 6, 2, 4)  # enough episodes that a shuffled order cannot pass by chance
    _, arrays = write_umi(tmp_path / "dataset.zarr.zip", lengths=lengths, yaws=(0.0,) * len(lengths))
    path = build_umi(str(tmp_path / "dataset.zarr.zip"), str(tmp_path / "rlds"))
    eps = list(iterate_episodes(path, "train", ("observation/gripper_width",)))
    assert [len(e["observation/gripper_width"]) for e in eps] == list(lengths)
    ends = np.cumsum(lengths)
    for e, (a, b) in zip(eps, zip(np.r_[0, ends[:-1]], ends)):  # widths are random per frame: they identify it
        np.testing.assert_array_equal(e["observation/gripper_width"], arrays["robot0_gripper_width"][a:b])
