"""Recoveries in the play (``PlayConfig.perturb_rate``, DART-style): while an expert approaches its
part, pushes are added to the EXECUTED action and the RECORDED action stays the expert's, so the play
shows corrections and never the pushes.

Checked on two plays from one seed, without and with pushes: they agree up to each stream's first
push (same randomness, the push's own step records the expert's action), the tcp then moves by the
recorded action plus the push, pushes only happen inside behaviours, and the experts still finish
their behaviours from wherever the pushes left the tcp.
"""
import dataclasses

import numpy as np
import pytest

from dynaguide_jax.envs import play as pl

SEED = 5
PLAIN = pl.PlayConfig.small(num_streams=4, steps=1200, chunk_steps=300, images=False)
PUSHED = dataclasses.replace(PLAIN, perturb_rate=0.05)
MAX_REL_POS = PLAIN.env.max_rel_pos


@pytest.fixture(scope="module")
def plays():
    return pl.collect_play(SEED, PLAIN), pl.collect_play(SEED, PUSHED)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[(first, end)]`` of the runs of True in a 1-d bool array."""
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
    return list(zip(edges[::2], edges[1::2]))


def test_plays_agree_until_the_first_push(plays):
    plain, pushed = plays
    assert plain.perturbed.dtype == bool and not plain.perturbed.any()
    for s in range(PLAIN.num_streams):
        t0 = int(np.argmax(pushed.perturbed[s]))
        assert pushed.perturbed[s, t0], f"stream {s} was never pushed"
        for name in ("robot_obs", "scene_obs", "rel_actions", "actions", "label"):  # the push is not recorded
            np.testing.assert_array_equal(getattr(pushed, name)[s, :t0 + 1], getattr(plain, name)[s, :t0 + 1])
        moved = np.abs(pushed.robot_obs[s, t0 + 1, :3] - plain.robot_obs[s, t0 + 1, :3]).max()
        assert moved > 0.2 * PUSHED.perturb_size * MAX_REL_POS, moved


def test_pushes_move_the_tcp_and_only_inside_behaviours(plays):
    _, pushed = plays
    share = pushed.perturbed.mean()
    assert 0.03 < share < 0.3, share
    assert np.all(pushed.label[pushed.perturbed] != pl.IDLE)  # never while idling or between behaviours
    lo, hi = PUSHED.perturb_steps
    lengths = [b - a for s in range(PUSHED.num_streams) for a, b in _runs(pushed.perturbed[s])]
    # (two pushes may follow each other without a gap: one run)
    assert lo <= np.median(lengths) <= hi and np.mean(np.asarray(lengths) <= hi) > 0.8
    # the tcp moves by the recorded action, plus the push on pushed steps
    moved = (pushed.robot_obs[:, 1:, :3] - pushed.robot_obs[:, :-1, :3]) / MAX_REL_POS
    extra = np.linalg.norm(moved - pushed.rel_actions[:, :-1, :3], axis=-1)
    on = pushed.perturbed[:, :-1]
    print(f"\npushed {share:.1%} of the steps; |executed - recorded| median {np.median(extra[on]):.2f} pushed, "
          f"{np.median(extra[~on]):.4f} not")
    assert np.median(extra[~on]) < 1e-3
    assert np.median(extra[on]) > 0.5 * PUSHED.perturb_size


def test_experts_recover_and_finish_their_behaviours(plays):
    plain, pushed = plays
    rates = []
    for play in plays:
        its = pl.interactions(play.label, play.scene_obs)
        rates.append(np.mean([it.happened for it in its]))
    # interactions holding a push
    touched = [it for it in pl.interactions(pushed.label, pushed.scene_obs)
               if pushed.perturbed[it.stream, it.first:it.last + 1].any()]
    recovered = np.mean([it.happened for it in touched])
    print(f"\nbehaviours done: plain {rates[0]:.0%}, pushed {rates[1]:.0%} ({recovered:.0%} of the {len(touched)} "
          "with a push)")
    assert len(touched) >= 20
    assert recovered >= 0.85 and rates[1] >= rates[0] - 0.1


@pytest.mark.parametrize("bad, message", [
    (dict(perturb_rate=1.5), "perturb_rate must be a probability"),
    (dict(perturb_rate=float("nan")), "perturb_rate must be a probability"),
    (dict(perturb_steps=(0, 3)), "perturb_steps must be"),
    (dict(perturb_steps=(5, 2)), "perturb_steps must be"),
    (dict(perturb_steps=(2.0, 3)), "perturb_steps must be"),
    (dict(perturb_size=0.0), "perturb_size must be in"),
    (dict(perturb_size=3.0), "perturb_size must be in"),
])
def test_bad_recovery_settings_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        pl.PlayConfig(**bad)
