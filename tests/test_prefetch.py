"""The background batch prefetcher and its use in the dynamics trainer: same stream, same losses."""
import json
import random
import threading
import time

import numpy as np
import pytest

from dynaguide_jax.data.episodes import EpisodeData
from dynaguide_jax.data.windows import DynamicsWindows
from dynaguide_jax.dynamics import DynamicsConfig
from dynaguide_jax.training import DynamicsTrainConfig, train_dynamics
from dynaguide_jax.training.prefetch import Prefetcher


def slow_square(i):
    time.sleep(random.Random(i).uniform(0, 0.01))  # workers finish out of order
    return i * i


@pytest.mark.parametrize("depth,workers", [(0, None), (1, None), (3, None), (4, 2)])
def test_prefetcher_yields_every_item_in_order(depth, workers):
    with Prefetcher(slow_square, range(5, 25), depth, workers) as it:
        assert list(it) == [i * i for i in range(5, 25)]
    assert it.waited_s > 0


def test_prefetcher_stays_at_most_depth_ahead_and_stops_with_the_loop():
    started, lock = [], threading.Lock()

    def produce(i):
        with lock:
            started.append(i)
        return i

    with Prefetcher(produce, range(1000), depth=3) as it:
        assert [next(it) for _ in range(4)] == [0, 1, 2, 3]
        time.sleep(0.05)
        assert max(started) <= 3 + 3  # consumed 4, at most `depth` more requested
    assert len(started) <= 7  # closing cancels what was queued; nothing runs afterwards
    time.sleep(0.05)
    assert len(started) <= 7


def test_prefetcher_reraises_a_worker_error_at_its_position():
    def produce(i):
        if i == 2:
            raise KeyError(f"frame {i} is missing")
        return i

    with Prefetcher(produce, range(5), depth=2) as it:
        assert next(it) == 0 and next(it) == 1
        with pytest.raises(KeyError, match="frame 2 is missing"):
            next(it)


def test_prefetcher_rejects_bad_settings():
    with pytest.raises(ValueError, match="depth must be >= 0"):
        Prefetcher(slow_square, range(3), depth=-1)
    with pytest.raises(ValueError, match="workers must be >= 1"):
        Prefetcher(slow_square, range(3), depth=2, workers=0)


def feature_windows(dtype):
    rng = np.random.default_rng(0)
    frames = 90
    data = EpisodeData(obs={"proprio": rng.normal(size=(frames, 15)).astype(np.float32)},
                       actions=rng.normal(size=(frames, 7)).astype(np.float32), episode_ends=np.array([45, 90]))
    feats = rng.normal(size=(frames, 16, 64)).astype(np.float16)  # a float16 cache, as `data cache` writes
    return DynamicsWindows(data, feats.astype(dtype), horizon=16)


def test_trainer_says_when_it_waits_for_its_batches(tmp_path, capsys):
    w = feature_windows(np.float32)

    def slow_batches(step, rows):
        time.sleep(0.3)  # far longer than a step of the small model
        return w.batch(step, 8, 0, rows)

    tc = DynamicsTrainConfig(steps=4, global_batch=8, log_every=2, checkpoint_every=4, async_checkpoints=False,
                             prefetch=0)
    r = train_dynamics(DynamicsConfig.preset("small"), slow_batches, tc, tmp_path, progress=False)
    assert r.last_metrics["input_wait_frac"] > 0.5
    err = capsys.readouterr().err
    assert err.count("input-bound") == 1 and "raise --prefetch (now 0)" in err


def test_trainer_losses_do_not_depend_on_prefetching_or_where_features_are_cast(tmp_path, capsys):
    """float16 features sent as they are (cast on the device) with 3 batches prefetched give the
    losses of float32 features prepared in the loop: the cast is exact and the stream is the same."""
    cfg = DynamicsConfig.preset("small")
    runs = {}
    for name, dtype, depth in (("f32_inline", np.float32, 0), ("f16_prefetch", np.float16, 3)):
        w = feature_windows(dtype)
        assert w.batch(0, 8)["patches"].dtype == dtype and w.at(w.valid[:2])["patches"].dtype == np.float32
        tc = DynamicsTrainConfig(steps=4, global_batch=8, learning_rate=1e-3, log_every=1, checkpoint_every=4,
                                 async_checkpoints=False, prefetch=depth)
        r = train_dynamics(cfg, lambda s, rows, w=w: w.batch(s, 8, 0, rows), tc, tmp_path / name, progress=False)
        runs[name] = [loss for _, loss in r.losses]
        logged = [json.loads(line) for line in open(tmp_path / name / "metrics.jsonl")]
        assert [m["step"] for m in logged] == [1, 2, 3, 4]
        assert [("input_wait_frac" in m) for m in logged] == [False, True, True, True]  # step 1 compiles: not timed
        if not depth:  # batches built inside the loop: the step always waits for them
            assert r.last_metrics["input_wait_frac"] > 0.0
        err = capsys.readouterr().err  # this run's output only
        if depth:  # prepared ahead, in-memory batches keep up with the step (waits ~0.5% here, 36% inline)
            assert "input-bound" not in err
    assert len(runs["f32_inline"]) == 4
    # the same batches in the same order: equal up to float rounding (XLA may fuse the cast differently)
    np.testing.assert_allclose(runs["f16_prefetch"], runs["f32_inline"], rtol=1e-6, atol=0)
