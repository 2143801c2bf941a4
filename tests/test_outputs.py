"""Bad output locations and a full disk: one message naming the path, exit 2, no traceback flood,
checkpoints intact and the rerun resumes."""
import errno
import logging
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from dynaguide_jax import cli
from dynaguide_jax.outputs import DiskFullError, OutputError, is_disk_full, prepare_output_dir
from tests.test_cli import ENV

NO_SPACE = os.strerror(errno.ENOSPC)


def test_prepare_output_dir_creates_and_checks(tmp_path):
    out = prepare_output_dir(tmp_path / "a" / "b")
    assert out == str(tmp_path / "a" / "b") and os.path.isdir(out) and os.listdir(out) == []  # probe removed
    assert prepare_output_dir(out) == out  # an existing directory is fine
    (tmp_path / "file").write_text("x")
    file = tmp_path / "file"
    with pytest.raises(OutputError) as info:
        prepare_output_dir(file / "run")
    assert str(info.value) == f"--out {file / 'run'} cannot be created: {file} is a file, not a directory"
    with pytest.raises(OutputError) as info:
        prepare_output_dir(file, "OUT")
    assert str(info.value) == f"OUT {file} is a file, not a directory: pass a directory (new or existing)"
    if os.geteuid() != 0:  # root writes through permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(OutputError) as info:
            prepare_output_dir(locked)
        assert str(info.value).startswith(f"--out {locked} is not writable (permission denied)")


def test_disk_full_is_recognised_however_wrapped():
    enospc = OSError(errno.ENOSPC, NO_SPACE)
    assert is_disk_full(enospc)
    # TensorStore via orbax: a ValueError carrying the OS error text
    assert is_disk_full(ValueError('RESOURCE_EXHAUSTED: Failed to write 10 bytes: No space left on device '
                                   "[os_error_code='28']"))
    try:
        try:
            raise enospc
        except OSError as e:
            raise RuntimeError("save failed") from e
    except RuntimeError as e:
        assert is_disk_full(e)
    if sys.version_info >= (3, 11):
        assert is_disk_full(ExceptionGroup("writes", [ValueError("other"), enospc]))  # noqa: F821
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(ValueError("RESOURCE_EXHAUSTED: Out of memory"))


@pytest.mark.parametrize("argv,name", [
    (["train", "policy", "--out", "{blocked}"], "--out"),
    (["train", "dynamics", "--out", "{blocked}"], "--out"),
    (["eval", "dynamics", "--run", "{run}", "--out", "{blocked}"], "--out"),
    (["data", "build", "umi", "{raw}", "{blocked}"], "OUT"),
    (["data", "cache", "{raw}", "{blocked}"], "OUT"),
    (["data", "goals", "{raw}", "{blocked}"], "OUT"),
    (["data", "play", "--out", "{blocked}"], "--out"),
    (["sweep", "--out-dir", "{blocked}"], "--out-dir"),
    (["demo", "--out-dir", "{blocked}"], "--out-dir"),
])
def test_commands_refuse_an_output_under_a_file_in_one_line(tmp_path, capsys, argv, name):
    (tmp_path / "file").write_text("x")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text('{"dynamics": {}, "train": {}, "data": {}}')
    blocked = tmp_path / "file" / "out"
    argv = [a.format(blocked=blocked, raw=tmp_path / "raw", run=tmp_path / "run") for a in argv]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"dynaguide {argv[0]}: error: {name} {blocked} cannot be created: {tmp_path / 'file'} is a file, not a "
        "directory"]


def test_cli_unwritable_out_exits_2_without_traceback(tmp_path):
    """As a user runs it: a read-only --out (root writes anyway: then a --out under a file)."""
    out = tmp_path / "ro"
    out.mkdir(mode=0o500)
    if os.geteuid() == 0:
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "run"
    p = subprocess.run([sys.executable, "-m", "dynaguide_jax.cli", "train", "dynamics", "--out", str(out), "--steps",
                        "1"], capture_output=True, text=True, env=ENV, timeout=600)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and f"--out {out}" in p.stderr, p.stderr


def small_run():
    from dynaguide_jax.data.episodes import EpisodeData
    from dynaguide_jax.data.windows import DynamicsWindows
    from dynaguide_jax.dynamics import DynamicsConfig
    from dynaguide_jax.training import DynamicsTrainConfig

    rng = np.random.default_rng(0)
    data = EpisodeData(obs={"proprio": rng.normal(size=(40, 15)).astype(np.float32)},
                       actions=rng.normal(size=(40, 7)).astype(np.float32), episode_ends=np.array([20, 40]))
    w = DynamicsWindows(data, rng.normal(size=(40, 16, 64)).astype(np.float32), horizon=4)
    cfg = DynamicsConfig.preset("small").replace(horizon=4)
    tc = DynamicsTrainConfig(steps=6, global_batch=4, log_every=1, checkpoint_every=2, async_checkpoints=True)
    return cfg, (lambda s, rows: w.batch(s, 4, 0, rows)), tc


def test_full_disk_during_training_one_error_checkpoints_kept_rerun_resumes(tmp_path, monkeypatch, capsys,
                                                                             caplog):
    """ENOSPC as orbax raises it (a ValueError from TensorStore) while step 4 is saved, with the
    background threads reporting it too: one DiskFullError naming the run and step 2, the partial
    step removed, nothing logged or printed; the rerun resumes from step 2."""
    import orbax.checkpoint as ocp

    from dynaguide_jax.training import train_dynamics

    cfg, batches, tc = small_run()
    run = tmp_path / "run"
    real_save = ocp.CheckpointManager.save

    def save(self, step, *a, **k):
        if step < 4:
            return real_save(self, step, *a, **k)
        os.makedirs(os.path.join(run, "checkpoints", f"{step}.orbax-checkpoint-tmp", "default"))
        err = ValueError(f'RESOURCE_EXHAUSTED: Error writing local file "{run}/checkpoints/{step}.orbax-checkpoint-'
                         f"tmp/default/_sharding\": {NO_SPACE} [os_error_code='28']")
        logging.getLogger("absl").error("_SignalingThread.run() raised an exception: %s", err, exc_info=err)
        logging.getLogger("asyncio").error("Task exception was never retrieved", exc_info=err)

        def thread():
            raise OSError(errno.ENOSPC, NO_SPACE)

        t = threading.Thread(target=thread)
        t.start()
        t.join()
        raise err

    monkeypatch.setattr(ocp.CheckpointManager, "save", save)
    caplog.set_level(logging.INFO)
    with pytest.raises(DiskFullError) as info:
        train_dynamics(cfg, batches, tc, run, progress=False)
    assert str(info.value) == (f"{NO_SPACE} while writing {run}: free space and rerun; the last complete "
                               "checkpoint (step 2) is kept and the rerun resumes from it")
    assert info.value.errno == errno.ENOSPC and is_disk_full(info.value)
    assert sorted(os.listdir(run / "checkpoints")) == ["2"]  # the partial step 4 is gone
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Traceback" not in capsys.readouterr().err

    monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)  # space freed
    again = train_dynamics(cfg, batches, tc, run, progress=False)
    assert again.resumed_from == 2 and [s for s, _ in again.losses] == [1, 2, 3, 4, 5, 6]
    assert sorted(os.listdir(run / "checkpoints")) == ["2", "4", "6"]


def test_torn_metrics_line_is_skipped(tmp_path):
    from dynaguide_jax.training import CheckpointManager

    mgr = CheckpointManager(tmp_path)
    mgr.log({"step": 1, "loss": 1.0})
    with open(mgr.metrics_path, "a") as f:
        f.write('{"step": 2, "lo')  # the disk filled up mid-line
    assert mgr.metrics() == [{"step": 1, "loss": 1.0}]
    mgr.truncate_metrics(1)
    assert open(mgr.metrics_path).read() == '{"step": 1, "loss": 1.0}\n'
    mgr.close()
