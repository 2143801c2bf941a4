"""What does choosing well among the demo's base-policy chunks get, knowing what each chunk does?

A reference point for the closed-loop demo (not a method of the paper, and not a bound on gradient
steering, which is not limited to the base policy's samples or to one chunk ahead): at every replan
the base policy draws ``--samples`` K chunks (as GPC does), each is executed in a copy of the world from
the rollout's true current state (the built-in world is pure JAX: the chosen chunk then does the same
in the rollout, up to float rounding, ~1e-7 m), and the ORACLE picks one:

- ``--score outcome``: a chunk whose executed actions complete the target (the original's detection
  rules, counted from the chunk's start; the rollout counts from its first state, so changes below a
  threshold may add up differently) first, then one that does nothing, last one that completes
  another behaviour (which would end the rollout as a failure); ties go to the first sample, i.e. the
  base policy's own draw. GPC with a one-chunk world model and the true outcome as its score.
- ``--score outcome+reach`` (default): the same, ties broken by the tcp's closest approach to the
  target part's contact point (the handle, lever or cap where the part is now,
  ``tabletop.part_location``): knowledge of where the part is, which ITPS is given too (it steers
  open-loop toward the part's start location).

Everything else is the demo's evaluation: its models, start states, rollout keys, horizon and the
first behaviour detected as the outcome; K = 1 replays the base policy. JSON lines for scripts, a
markdown table for people::

    python benchmarks/oracle_steering.py --demo-dir runs/demo --samples 1 5 16
"""
from __future__ import annotations

import argparse
import json
import sys

SCORES = ("outcome", "outcome+reach")


def contact_points(state):
    """``[4, 3]``: where the tcp acts on each part (``tabletop.PARTS``) in ``state`` (one env)."""
    import jax.numpy as jnp

    from dynaguide_jax.envs import tabletop as tt

    values = {"button": 0.0, "switch": state.switch, "drawer": state.drawer, "door": state.door}
    return jnp.stack([tt.part_location(p, values[p]) for p in tt.PARTS])


def oracle_fn(sample_fn, env_cfg, goal, part, unravel, *, samples: int, first: int, executed: int, score: str):
    """``policy_fn(obs_stack, key)`` for ``eval.rollout.closed_loop``: the best of ``samples`` chunks of
    ``sample_fn(obs_stack, key) -> [N, Tp, A]`` by their true outcome in the world. ``goal``: the target's index
    in ``eval.behaviours.BEHAVIOURS``, ``part``: its part's in ``tabletop.PARTS`` (both may be traced);
    ``obs_stack["world"]`` holds each env's raveled state (``unravel`` rebuilds one)."""
    import jax
    import jax.numpy as jnp

    from dynaguide_jax.envs import tabletop as tt
    from dynaguide_jax.eval.behaviours import NO_BEHAVIOUR, detect_behaviour

    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")

    def outcome(state, actions):  # one env, one chunk's executed actions -> (behaviour index, closest approach)
        def body(s, a):
            s = tt.step(s, a, env_cfg)
            return s, (tt.robot_obs(s), tt.scene_obs(s))

        _, (robot, scene) = jax.lax.scan(body, state, actions)
        robot = jnp.concatenate([tt.robot_obs(state)[None], robot])
        scene = jnp.concatenate([tt.scene_obs(state)[None], scene])
        reach = jnp.min(jnp.linalg.norm(robot[:, :3] - contact_points(state)[part], axis=-1))
        return detect_behaviour(scene, robot).index, reach

    def fn(obs_stack, key):
        states = jax.vmap(unravel)(obs_stack["world"][:, -1])
        # sample 0 with the rollout's own key: the chunk the policy itself would draw (K = 1 is the policy alone)
        keys = jnp.concatenate([key[None], jax.random.split(jax.random.fold_in(key, 1), samples - 1)])
        chunks = jax.vmap(lambda k: sample_fn(obs_stack, k))(keys)  # [K, N, Tp, A]
        acts = chunks[:, :, first:first + executed]
        index, reach = jax.vmap(jax.vmap(outcome), (None, 0))(states, acts)  # [K, N]
        rank = jnp.where(index == goal, 2.0, jnp.where(index == NO_BEHAVIOUR, 1.0, 0.0))
        if score == "outcome+reach":
            rank = rank - jnp.tanh(reach)  # within a class, nearer the part is better (reach < ~1 m)
        best = jnp.argmax(rank, axis=0)  # first of equals: the policy's own draw
        return jnp.take_along_axis(chunks, best[None, :, None, None], axis=0)[0]

    return fn


def world_env(env_cfg, one_state):
    """``(EnvFns, unravel)``: the built-in world whose observations carry each env's raveled state under
    ``"world"``, and the function that rebuilds a state from it."""
    from jax.flatten_util import ravel_pytree

    from dynaguide_jax.eval.rollout import EnvFns, tabletop_env

    plain = tabletop_env(env_cfg)
    env = EnvFns(step=plain.step, low_dim=plain.low_dim,
                 observe=lambda s: {**plain.observe(s), "world": ravel_pytree(s)[0]})
    return env, ravel_pytree(one_state)[1]


def oracle_steering(demo_dir: str, samples_list, score: str = "outcome+reach", log=print) -> list[dict]:
    """One row per K in ``samples_list``: ``{"samples", "score", "mean_success", "per_target": {target:
    {"success", "n", "distribution", "detected": [behaviour index per rollout (eval.behaviours.BEHAVIOURS)]}}}``."""
    import numpy as np

    import jax
    import jax.numpy as jnp

    from dynaguide_jax.demo.evaluate import ACTION_HORIZON
    from dynaguide_jax.demo.pipeline import TARGETS, finished_demo_context
    from dynaguide_jax.envs import tabletop
    from dynaguide_jax.eval import methods
    from dynaguide_jax.eval.behaviours import BEHAVIOURS, behaviour_distribution, detect_behaviours
    from dynaguide_jax.eval.rollout import LoopConfig, closed_loop

    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    cfg, ctx = finished_demo_context(demo_dir)
    m = ctx.models
    env, unravel = world_env(ctx.env, jax.tree.map(lambda x: x[0, 0], ctx.starts.states))
    loop = LoopConfig(horizon=cfg.horizon, obs_horizon=m.policy.config.obs_horizon, action_horizon=ACTION_HORIZON)
    sample = methods.base_fn(m.policy, m.policy_params, m.schedule)
    goals = jnp.asarray([BEHAVIOURS.index(t) for t in TARGETS])
    parts = jnp.asarray([tabletop.PARTS.index(t.split("_")[0]) for t in TARGETS])
    rows = []
    for samples in samples_list:
        def one_target(states, key, goal, part):
            fn = oracle_fn(sample, ctx.env, goal, part, unravel, samples=samples, first=loop.first,
                           executed=ACTION_HORIZON, score=score)
            out = closed_loop(env, fn, states, key, loop)
            return detect_behaviours(out.scene_obs, out.robot_obs).index

        index = np.asarray(jax.jit(jax.vmap(one_target))(ctx.starts.states, ctx.starts.keys, goals, parts))
        per_target = {t: {"success": float(np.mean(index[i] == BEHAVIOURS.index(t))), "n": int(index.shape[1]),
                          "distribution": behaviour_distribution(index[i]), "detected": index[i].tolist()}
                      for i, t in enumerate(TARGETS)}
        row = {"samples": samples, "score": score, "mean_success": float(np.mean(
            [v["success"] for v in per_target.values()])), "per_target": per_target}
        rows.append(row)
        log(json.dumps(row))
    return rows


def format_table(rows) -> str:
    targets = list(rows[0]["per_target"])
    head = ["oracle", *targets, "mean", "nothing"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [f"{r['per_target'][t]['success']:.0%}" for t in targets]
        nothing = sum(v["distribution"].get("no_behavior", 0.0) for v in r["per_target"].values()) / len(targets)
        lines.append(f"| best of {r['samples']} ({r['score']}) | " + " | ".join(cells)
                     + f" | **{r['mean_success']:.0%}** | {nothing:.0%} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo-dir", default="runs/demo", help="a finished `dynaguide demo` output (default: %(default)s)")
    p.add_argument("--samples", type=int, nargs="+", default=[5], help="K base chunks per replan, one run per "
                   "value (default: %(default)s, GPC's)")
    p.add_argument("--score", choices=SCORES, default="outcome+reach", help="how the oracle ranks the chunks "
                   "(default: %(default)s)")
    p.add_argument("--out", default=None, help="also write the rows as JSON here (default: none)")
    a = p.parse_args(argv)
    try:
        if any(k < 1 for k in a.samples):
            raise ValueError(f"--samples must be >= 1, got {a.samples}")
        rows = oracle_steering(a.demo_dir, a.samples, a.score)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(rows))
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
