"""Sharded dynamics training: 8 fake devices (DP and FSDP) equal one device, two real processes on
localhost equal one, a killed run resumes with the same loss curve."""
import json
import os
import socket
import subprocess
import sys

import pytest

from tests.proc_utils import kill_after_checkpoint
from tests.test_cli import ENV

TOL = 1e-5


def run(args, env=None, **kw):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env or ENV, timeout=600, **kw)


def losses(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line)["loss"] for line in f]


def test_eight_devices_data_parallel_and_fsdp_match_one_device(tmp_path):
    # the eight fake devices, compiled as every other test's programs (conftest: backend optimisation level 0)
    env = dict(ENV, XLA_FLAGS=" ".join((ENV.get("XLA_FLAGS", ""), "--xla_force_host_platform_device_count=8")).strip())
    proc = run(["-m", "tests.sharded_worker", str(tmp_path)], env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["devices"] == 8
    assert "fsdp" in out["fsdp4x2_sharding"] and out["dp8_sharding"] == "P()"
    # the Pallas attention splits the batch over both mesh axes (shard_map), each shard drawing its rows' masks
    for name, ref in (("dp8", "one"), ("fsdp4x2", "one"), ("dp8_pallas", "one_pallas"),
                      ("fsdp4x2_pallas", "one_pallas")):
        assert len(out[name]) == 4
        for a, b in zip(out[name], out[ref]):
            assert abs(a - b) < TOL, (name, out[name], out[ref])
    # the kernel's attention dropout draws other masks than the explicit path's: same start, other curve
    assert out["one_pallas"][0] != out["one"][0] and abs(out["one_pallas"][0] - out["one"][0]) < 0.1


TRAIN = ["-m", "dynaguide_jax.cli", "train", "dynamics", "--steps", "6", "--checkpoint-every", "2",
         "--global-batch", "8", "--log-every", "1", "--episodes", "16", "--length", "30", "--quiet"]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One uninterrupted single-process run of TRAIN: the reference of the two tests below (one
    `dynaguide train dynamics` subprocess instead of one per test)."""
    out = tmp_path_factory.mktemp("single") / "run"
    proc = run([*TRAIN, "--out", str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_two_processes_on_localhost_match_one_process(tmp_path, single):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, *TRAIN, "--out", str(tmp_path / "multi"), "--coordinator",
                               f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    assert "2 process(es)" in outs[0][0]
    assert sorted(os.listdir(tmp_path / "multi" / "checkpoints")) == ["2", "4", "6"]
    assert len(losses(single)) == 6
    for a, b in zip(losses(tmp_path / "multi"), losses(single), strict=True):
        assert abs(a - b) < TOL


@pytest.mark.slow
def test_killed_dynamics_run_resumes_exactly(tmp_path, single):
    """Killed (SIGKILL) once its step-2 checkpoint exists, 4 of 6 steps still to go; rerun into the
    same directory it resumes and ends as the uninterrupted run (the shared ``single`` run)."""
    full = single
    victim = subprocess.Popen([sys.executable, *TRAIN, "--out", str(tmp_path / "killed")], env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ckpts = tmp_path / "killed" / "checkpoints"
    kill_after_checkpoint(victim, ckpts, 2)
    resumed = run([*TRAIN, "--out", str(tmp_path / "killed")])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step" in resumed.stdout
    assert len(losses(full)) == 6 and losses(tmp_path / "killed") == losses(full)
    import jax
    import numpy as np

    from dynaguide_jax.training import load_trained_dynamics

    (cfg_a, a), (cfg_b, b) = load_trained_dynamics(tmp_path / "killed"), load_trained_dynamics(full)
    assert cfg_a == cfg_b and cfg_a.num_layers == 2
    jax.tree.map(np.testing.assert_array_equal, a, b)  # the resumed run ends with the same weights
