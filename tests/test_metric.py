"""Guidance metric vs. the original torch formula (cdist + logsumexp), gradients, guardrails."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dynaguide_jax.dynamics import DynamicsConfig
from dynaguide_jax.guidance import GoalSet, guidance_metric, min_goal_distance, paper_scaled_sigma


def torch_metric(z, pos, neg, sigma, squared=False):
    z, d = torch.tensor(z), 0
    for goals, sign in ((pos, 1), (neg, -1)):
        if goals is not None:
            dist = torch.cdist(torch.tensor(goals), z, p=2.0)
            if squared:
                dist = dist**2
            d = d + sign * torch.logsumexp(-dist / sigma, dim=0)
    return d.numpy()


@pytest.mark.parametrize("sides", ["pos", "neg", "both"])
@pytest.mark.parametrize("distance", ["l2", "squared_l2"])
def test_matches_torch(rng, sides, distance):
    z = rng.normal(size=(4, 16, 8)).astype(np.float32)
    pos = rng.normal(size=(5, 16 * 8)).astype(np.float32) if sides != "neg" else None
    neg = rng.normal(size=(3, 16 * 8)).astype(np.float32) if sides != "pos" else None
    sigma = 30.0 if distance == "squared_l2" else 3.0
    ours = guidance_metric(jnp.asarray(z), GoalSet.create(pos, neg), sigma, distance)
    ref = torch_metric(z.reshape(4, -1), pos, neg, sigma, distance == "squared_l2")
    np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-5, atol=1e-5)


def test_paper_scaled_sigma_keeps_the_original_metric_for_fewer_patches(rng):
    paper = DynamicsConfig.preset("paper")
    assert paper.predicted_tokens * paper.feature_dim == 256 * 384 and paper_scaled_sigma(30.0, paper) == 30.0
    small = paper.replace(patches_per_camera=16)  # ViT-S/14 at 56 px
    assert paper_scaled_sigma(30.0, small) == 7.5
    # predictions and goals on 16 patches, and the same repeated 16 times (256 patches whose entries differ
    # alike): the original's sigma there and the scaled one here give the same metric and gradient
    z = rng.normal(size=(3, 16, 384)).astype(np.float32)
    pos, neg = rng.normal(size=(5, 16, 384)).astype(np.float32), rng.normal(size=(2, 16, 384)).astype(np.float32)
    tile = lambda x: np.tile(x, (1, 16, 1))  # noqa: E731
    few = lambda z: guidance_metric(z, GoalSet.create(pos, neg), paper_scaled_sigma(30.0, small)).sum()  # noqa: E731
    many = lambda z: guidance_metric(z, GoalSet.create(tile(pos), tile(neg)), 30.0).sum()  # noqa: E731
    np.testing.assert_allclose(few(jnp.asarray(z)), many(jnp.asarray(tile(z))), rtol=1e-4)
    g_few, g_many = jax.grad(few)(jnp.asarray(z)), jax.grad(many)(jnp.asarray(tile(z)))
    np.testing.assert_allclose(g_few, np.asarray(g_many).reshape(3, 16, 16, 384).sum(1), rtol=1e-3, atol=1e-7)
    assert jax.jit(lambda s: paper_scaled_sigma(s, small))(30.0) == pytest.approx(7.5)  # traced settings too


def test_gradient_pulls_toward_positive_and_is_finite_on_a_goal(rng):
    pos = rng.normal(size=(1, 6)).astype(np.float32)
    neg = rng.normal(size=(1, 6)).astype(np.float32)
    goals = GoalSet.create(pos, neg)
    z = jnp.asarray(rng.normal(size=(1, 6)), jnp.float32)
    g = jax.grad(lambda z: guidance_metric(z, goals, 1.0).sum())(z)
    moved = z + 0.05 * g
    assert float(min_goal_distance(moved, pos)[0]) < float(min_goal_distance(z, pos)[0])
    g_on = jax.grad(lambda z: guidance_metric(z, goals, 1.0).sum())(jnp.asarray(pos))
    assert np.isfinite(np.asarray(g_on)).all()


def test_guardrails(rng):
    with pytest.raises(ValueError, match="positive goals, negative goals, or both"):
        GoalSet.create(None, None)
    with pytest.raises(ValueError, match="empty"):
        GoalSet.create(np.zeros((0, 4)), None)
    with pytest.raises(ValueError, match="differ in feature shape"):
        GoalSet.create(np.zeros((2, 4)), np.zeros((2, 5)))
    with pytest.raises(FloatingPointError, match="positive goals"):
        GoalSet.create(np.array([[0.0, np.nan]]), None)
    goals = GoalSet.create(np.zeros((2, 4)), None)
    with pytest.raises(ValueError, match="flatten to 5"):
        guidance_metric(jnp.zeros((3, 5)), goals, 1.0)
    with pytest.raises(ValueError, match="sigma must be positive"):
        guidance_metric(jnp.zeros((3, 4)), goals, 0.0)
    with pytest.raises(FloatingPointError, match="predicted features"):
        guidance_metric(jnp.full((3, 4), jnp.inf), goals, 1.0)
    with pytest.raises(ValueError, match="distance must be"):
        guidance_metric(jnp.zeros((3, 4)), goals, 1.0, "cosine")


def test_works_under_jit_and_vmap(rng):
    goals = GoalSet.create(rng.normal(size=(3, 4)), None)
    z = jnp.asarray(rng.normal(size=(2, 4)), jnp.float32)
    f = jax.jit(lambda z, s: guidance_metric(z, goals, s))
    out = jax.vmap(f, in_axes=(None, 0))(z, jnp.array([1.0, 2.0]))
    np.testing.assert_allclose(np.asarray(out[1]), np.asarray(guidance_metric(z, goals, 2.0)), rtol=1e-6)


def test_bad_inputs_name_the_input():
    goals = GoalSet.create(np.zeros((2, 4)), None)
    z = jnp.zeros((3, 4))
    for bad in (float("inf"), float("nan"), None, np.ones(2)):  # sigma: finite scalar > 0
        with pytest.raises(ValueError, match="sigma must be positive"):
            guidance_metric(z, goals, bad)
    with pytest.raises(TypeError, match="goals must be a GoalSet"):
        guidance_metric(z, np.zeros((2, 4)), 1.0)
    with pytest.raises(TypeError, match="GoalSet.create"):
        guidance_metric(z, GoalSet(positive=[[0.0] * 4]), 1.0)
    with pytest.raises(ValueError, match="B >= 1"):
        guidance_metric(jnp.zeros((0, 4)), goals, 1.0)
    with pytest.raises(FloatingPointError, match="guidance metric"):  # overflow: no NaN/inf leaves silently
        guidance_metric(jnp.full((3, 4), 1e30), goals, 1.0)
    with pytest.raises(ValueError, match="flatten to 4 values but goals to 5"):
        min_goal_distance(z, np.zeros((2, 5)))
    with pytest.raises(ValueError, match="non-empty"):
        min_goal_distance(z, np.zeros((0, 4)))
    with pytest.raises(FloatingPointError, match="predicted features"):
        min_goal_distance(jnp.full((3, 4), jnp.nan), np.zeros((2, 4)))
    from dynaguide_jax.guidance import pairwise_distance
    with pytest.raises(ValueError, match=r"z \[B, F\] and goals \[K, F\]"):
        pairwise_distance(z, jnp.zeros((2, 5)))


def test_position_guidance_bad_inputs():
    from dynaguide_jax.guidance import PositionGuidance
    g, feats, acts = PositionGuidance(), {"start_xyz": jnp.zeros((2, 3))}, jnp.zeros((2, 4, 7))
    with pytest.raises(ValueError, match="downscaling"):
        PositionGuidance(downscaling=0.0)
    with pytest.raises(ValueError, match=r"target must be \[3\] or \[B=2, 3\]"):
        g.direction({"target": jnp.ones(2)}, feats, acts)
    with pytest.raises(KeyError, match="'target'"):
        g.direction({}, feats, acts)
    with pytest.raises(FloatingPointError, match="target"):
        g.direction({"target": jnp.full(3, jnp.nan)}, feats, acts)
    with pytest.raises(ValueError, match="A >= 3"):
        g.direction({"target": jnp.ones(3)}, feats, jnp.zeros((2, 4, 2)))
    with pytest.raises(ValueError, match="B=3"):
        g.metric({"target": jnp.ones(3)}, {"start_xyz": jnp.zeros((3, 3))}, acts)
