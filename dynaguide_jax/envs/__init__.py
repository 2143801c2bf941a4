"""Environments: the built-in tabletop world modelled on CALVIN's scene D (``tabletop``: reset,
step, observe), its ray caster (``render``) and scripted experts (``expert``); the CALVIN
experiments' reset and termination rules are in ``reset_states``; ``play`` chains the experts into
CALVIN-style play and ``calvin_writer`` writes it in the raw CALVIN layout (``write_world_play``: the
world's play at one image size, as the demo and ``dynaguide data play`` make it). Host-side
environments (numpy in and out, one per worker process of a ``vector_env.VectorEnv``): CALVIN's
simulator through ``calvin`` (optional calvin_env + pybullet, imported on first use) and the
built-in world through ``tabletop_host``."""
from dynaguide_jax.envs.calvin_writer import (  # noqa: F401
    CalvinPlayWriter, tabletop_for_image_size, write_play_calvin, write_world_play,
)
from dynaguide_jax.envs.expert import (  # noqa: F401
    ExpertRollout, ExpertState, expert_action, expert_init, rollout_expert, with_start_condition,
)
from dynaguide_jax.envs.play import PlayChunk, PlayConfig, collect_play, generate_play, interactions  # noqa: F401
from dynaguide_jax.envs.tabletop import (  # noqa: F401
    TabletopConfig, TabletopState, observe, reset, robot_obs, scene_obs, step,
)
