"""Goal embeddings from goal trajectories vs. the original (the prediction at each trajectory's
last step with its last action repeated, ``pad_mode="repeat"``): <= 1e-4."""
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dynaguide_jax.dynamics import load_original_dynamics
from dynaguide_jax.guidance import encode_cameras, goals_from_trajectory_ends
from dynaguide_jax.guidance.goals import repeat_last_action
from tests.oracles import goal_embeddings
from tests.test_dynamics import small_oracle

TOL = 1e-4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    oracle = small_oracle(seed=2)
    path = tmp_path_factory.mktemp("dyn") / "dyn.pth"
    torch.save(oracle.state_dict(), path)
    cfg, params, (enc_cfg, enc_params) = load_original_dynamics(path, patches_per_camera=16, encoder_num_heads=2)
    rng = np.random.default_rng(0)
    raw = [rng.uniform(-1.5, 1.5, (n, 7)) for n in (5, 23, 16)]  # shorter than, longer than, = the horizon
    demos = [{"actions": np.clip(a, -1, 1),  # the goal HDF5 holds clipped rel_actions
              "obs": {"third_person": rng.integers(0, 256, (len(a), 64, 64, 3), dtype=np.uint8),
                      "proprio": rng.normal(size=(len(a), 15))}} for a in raw]
    return oracle, cfg, params, enc_cfg, enc_params, raw, demos


def test_trajectory_end_goals_match_original(setup):
    oracle, cfg, params, enc_cfg, enc_params, raw, demos = setup
    dataset = goal_embeddings.MultiviewDataset(demos, 16, ["third_person"], padding=True, pad_mode="repeat",
                                               proprio="proprio")
    ref = goal_embeddings.good_embeddings(oracle, dataset).numpy()
    images = np.stack([d["obs"]["third_person"][-1] for d in demos]).astype(np.float32)
    proprio = jnp.asarray(np.stack([d["obs"]["proprio"][-1] for d in demos]), jnp.float32)
    patches = encode_cameras(enc_cfg, enc_params, jnp.asarray(images)[:, None], image_size=56)
    last = np.clip(np.stack([a[-1] for a in raw]), -1, 1).astype(np.float32)  # as the goal export writes it
    ours = goals_from_trajectory_ends(cfg, params, patches, proprio, last)
    np.testing.assert_allclose(np.asarray(ours), ref, atol=TOL)
    chunk = goals_from_trajectory_ends(cfg, params, patches, proprio, repeat_last_action(last, 16))
    np.testing.assert_allclose(np.asarray(chunk), np.asarray(ours), atol=1e-6)


def test_trajectory_end_goals_name_bad_action_shapes(setup):
    _, cfg, params, *_ = setup
    patches, proprio = jnp.zeros((2, 16, 32)), jnp.zeros((2, 15))
    with pytest.raises(ValueError, match=r"goal actions must be \[K=2, A=7\].*got shape \(2, 8, 7\)"):
        goals_from_trajectory_ends(cfg, params, patches, proprio, jnp.zeros((2, 8, 7)))
    with pytest.raises(ValueError, match=r"last actions must be \[K, A\], got shape \(7,\)"):
        repeat_last_action(jnp.zeros(7), 16)
