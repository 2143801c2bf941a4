"""How far does DynaGuide's guidance raise its own metric, next to GPC's pick among base samples?

At a finished demo's start states (every target's, the demo's first observation), ``--samples`` K
chunks are drawn from the base policy and, with the SAME keys, from DynaGuide at each ``--scales``
value (the demo's M, sigma and goal sets unless ``--repeats`` / ``--sigma`` say otherwise), and each
chunk is scored with the guidance metric ``d = LSE_i(-||g_i - z||/sigma)`` (sigma on the original's scale,
applied as the demo applies it: ``guidance.paper_scaled_sigma``) of the dynamics model's
prediction ``z`` (higher: nearer the target's goals). Printed per target: the base chunks' mean d
and its spread over the K samples, d of the chunk GPC would pick among the K (its own score: the
mean distance of ``z`` to the goal frames' encoder features), the best of the K by d, and
DynaGuide's mean d and how far its chunks moved from the base chunks drawn with the same key
(``|a_dg - a_base| / |a_base|``; with M > 1 the repeats' fresh noise moves them too: compare with
scale 0). A second table says where the chunks go: the cosine between a chunk's executed net tcp move
and the direction from the tcp to the target's part (ITPS's target), for the base chunks, GPC's pick,
ITPS's chunk (the demo's ITPS scale and M) and DynaGuide's. JSON lines for scripts, markdown tables for
people::

    python benchmarks/guidance_effect.py --demo-dir runs/demo --scales 0 1.5 6 24 --samples 5
"""
from __future__ import annotations

import argparse
import json
import sys


def guidance_effect(demo_dir: str, scales, samples: int, repeats: int | None = None, seed: int = 0,
                    sigma: float | None = None, log=print) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from dynaguide_jax.baselines.gpc import mean_goal_distance
    from dynaguide_jax.demo.evaluate import ACTION_HORIZON
    from dynaguide_jax.demo.pipeline import TARGETS, finished_demo_context
    from dynaguide_jax.eval import methods
    from dynaguide_jax.eval.rollout import stack_frames, tabletop_env
    from dynaguide_jax.guidance import DynaGuide, GoalSet, guidance_metric, paper_scaled_sigma

    cfg, ctx = finished_demo_context(demo_dir)
    m_repeats = cfg.repeats if repeats is None else repeats
    m_sigma = cfg.sigma if sigma is None else sigma
    m, env = ctx.models, tabletop_env(ctx.env)
    guide = DynaGuide(dynamics=m.dynamics, encoder=m.encoder, image_size=cfg.encoder_size)

    def gparams(dyn_goals, mask):
        return {"dynamics": m.dynamics_params, "encoder": m.encoder_params,
                "sigma": paper_scaled_sigma(m_sigma, m.dynamics),
                "goals": GoalSet(positive=dyn_goals, positive_mask=mask)}

    base = jax.jit(methods.base_fn(m.policy, m.policy_params, m.schedule))

    @jax.jit
    def guided(stack, key, dyn_goals, mask, scale):
        return methods.guided_fn(m.policy, m.policy_params, m.schedule, guide, gparams(dyn_goals, mask), scale=scale,
                                 repeats=m_repeats)(stack, key)

    @jax.jit
    def score(stack, actions, dyn_goals, mask, goal_features):
        gp = gparams(dyn_goals, mask)
        feats = guide.prepare(gp, methods.guidance_view(stack))
        z = guide.predict(gp, feats, actions)
        d = guidance_metric(z, gp["goals"], gp["sigma"], guide.distance)  # guide.metric, without predicting again
        gpc = mean_goal_distance(z.reshape(z.shape[0], -1), goal_features.reshape(goal_features.shape[0], -1), mask)
        return d, gpc

    first = m.policy.config.obs_horizon - 1  # the executed actions: chunk[first:first + 14], as the demo runs them

    def toward(actions, tcp, part):  # [N] cosine of the executed net tcp move with the direction to the part
        move = np.clip(np.asarray(actions)[:, first:first + ACTION_HORIZON, :3], -1, 1).sum(1)
        to_part = np.asarray(part)[None] - np.asarray(tcp)
        return np.sum(move * to_part, -1) / (np.linalg.norm(move, axis=-1) * np.linalg.norm(to_part, axis=-1) + 1e-9)

    itps = jax.jit(lambda stack, key, xyz: methods.itps_fn(m.policy, m.policy_params, m.schedule, xyz,
                                                           scale=cfg.itps_scale, repeats=m_repeats)(stack, key))
    rows = []
    for i, target in enumerate(TARGETS):
        states = jax.tree.map(lambda x: x[i], ctx.starts.states)
        tcp, part = np.asarray(states.tcp_pos), ctx.goals.xyz[i]  # the part's location: ITPS's target
        obs = jax.vmap(env.observe)(states)
        stack = stack_frames([obs] * m.policy.config.obs_horizon)
        goals = (jnp.asarray(ctx.goals.dynamics_goals[i]), jnp.asarray(ctx.goals.mask[i]))
        feats = jnp.asarray(ctx.goals.features[i])
        keys = [jax.random.key(seed * 1000 + k) for k in range(samples)]
        a_base = [base(stack, k) for k in keys]
        d_base, gpc = map(np.stack, zip(*[map(np.asarray, score(stack, a, *goals, feats)) for a in a_base]))  # [K, N]
        pick = gpc.argmin(0)
        toward_base = np.stack([toward(a, tcp, part) for a in a_base])  # [K, N]
        row = {"target": target, "rollouts": int(d_base.shape[1]), "samples": samples, "repeats": m_repeats,
               "sigma": m_sigma, "sigma_applied": float(paper_scaled_sigma(m_sigma, m.dynamics)),
               "d_base": float(d_base.mean()), "sd_over_samples": float(d_base.std(0).mean()),
               "d_gpc_pick": float(d_base[pick, np.arange(d_base.shape[1])].mean()),
               "d_best_of_samples": float(d_base.max(0).mean()), "dynaguide": {},
               "toward_base": float(toward_base.mean()),
               "toward_gpc_pick": float(toward_base[pick, np.arange(len(pick))].mean()),
               "toward_itps": float(np.mean([toward(itps(stack, k, jnp.asarray(part)), tcp, part) for k in keys]))}
        for s in scales:
            a_dg = [guided(stack, k, *goals, jnp.float32(s)) for k in keys]
            d_dg = np.stack([np.asarray(score(stack, a, *goals, feats)[0]) for a in a_dg])
            moved = np.stack([np.linalg.norm(np.asarray(g - b).reshape(len(b), -1), axis=-1)
                              / np.linalg.norm(np.asarray(b).reshape(len(b), -1), axis=-1)
                              for g, b in zip(a_dg, a_base)])
            row["dynaguide"][str(s)] = {"d": float(d_dg.mean()), "moved": float(moved.mean()),
                                        "toward": float(np.mean([toward(a, tcp, part) for a in a_dg]))}
        rows.append(row)
        log(json.dumps(row))
    return rows


def format_table(rows, scales) -> str:
    head = ["target", "d base (sd over samples)", "GPC pick", "best of K",
            *(f"DynaGuide s={s} (moved)" for s in scales)]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        dg = [f"{r['dynaguide'][str(s)]['d']:.3f} ({r['dynaguide'][str(s)]['moved']:.2f})" for s in scales]
        lines.append(f"| {r['target']} | {r['d_base']:.3f} ({r['sd_over_samples']:.3f}) | {r['d_gpc_pick']:.3f} | "
                     f"{r['d_best_of_samples']:.3f} | " + " | ".join(dg) + " |")
    return "\n".join(lines)


def format_toward(rows, scales) -> str:
    head = ["target", "base", "GPC pick", "ITPS", *(f"DynaGuide s={s}" for s in scales)]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows + [_mean_row(rows, scales)]:
        cells = [r["toward_base"], r["toward_gpc_pick"], r["toward_itps"],
                 *(r["dynaguide"][str(s)]["toward"] for s in scales)]
        lines.append(f"| {r['target']} | " + " | ".join(f"{c:+.2f}" for c in cells) + " |")
    return "\n".join(lines)


def _mean_row(rows, scales) -> dict:
    mean = lambda f: sum(f(r) for r in rows) / len(rows)  # noqa: E731
    return {"target": "**mean**", **{k: mean(lambda r, k=k: r[k]) for k in ("toward_base", "toward_gpc_pick",
                                                                          "toward_itps")},
            "dynaguide": {str(s): {"toward": mean(lambda r, s=s: r["dynaguide"][str(s)]["toward"])} for s in scales}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo-dir", default="runs/demo", help="a finished `dynaguide demo` output (default: %(default)s)")
    p.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.5, 6.0, 24.0],
                   help="DynaGuide scales (default: %(default)s)")
    p.add_argument("--samples", type=int, default=5, help="K chunks per start state (default: %(default)s, GPC's)")
    p.add_argument("--repeats", type=int, default=None, help="DynaGuide's M (default: the demo's)")
    p.add_argument("--sigma", type=float, default=None, help="the metric's temperature on the original's scale, "
                   "applied as the demo applies it (guidance.paper_scaled_sigma; default: the demo's)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--out", default=None, help="also write the rows as JSON here (default: none)")
    a = p.parse_args(argv)
    try:
        if a.samples < 1 or (a.repeats is not None and a.repeats < 1):
            raise ValueError("--samples and --repeats must be >= 1")
        if a.sigma is not None and not a.sigma > 0:
            raise ValueError(f"--sigma must be > 0, got {a.sigma}")
        rows = guidance_effect(a.demo_dir, a.scales, a.samples, a.repeats, a.seed, a.sigma)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(rows, a.scales))
    print("\nwhere the chunks go: cosine of the executed net tcp move with the direction to the target's part\n")
    print(format_toward(rows, a.scales))
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"scales": a.scales, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
