"""How well a trained policy imitates held-out demonstrations, and whether it finishes what they began.

- ``open_loop_agreement``: at evenly spaced frames of held-out behaviour segments, a chunk sampled
  from the frame's observation history against the demonstration's next actions (the part a
  rollout executes, ``[first, first + executed)``): the cosine between the two net tcp
  displacements (sums of the xyz actions), the same cosine between two chunks sampled from the
  same history (how much the policy's own choice varies), the share of steps whose gripper command
  (the last action entry) has the demonstration's sign, and the mean squared error beside "always
  the mean action" (the mean of the evaluated chunks themselves: an optimistic baseline). Per
  phase of the segment: where the frame lies between the segment's start (the previous
  interaction's end) and its end (this one's); near the end the demonstration's chunk is padded
  with the segment's last action, as in training.
- ``completion_from_play``: the built-in world reset to the held-out play's state at fractions of
  each articulated segment, the policy run closed loop; the share of rollouts whose first
  behaviour (``eval.behaviours``, the original's rules, from the state the rollout starts in: a
  full threshold move from there) is the segment's own, and the share that do nothing. Halfway
  through a segment of the built-in world's play the part has usually not moved yet, so a policy
  that imitates the demonstration should do the behaviour from there.

Both take ``sample_fn(obs_stack {k: [N, To, ...]}, key) -> actions [N, Tp, A]``, e.g.
``eval.methods.base_fn``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

import jax
import jax.numpy as jnp

from dynaguide_jax._checks import check_int
from dynaguide_jax.envs import tabletop
from dynaguide_jax.eval.batching import padded_batches
from dynaguide_jax.eval.behaviours import ARTICULATED_BEHAVIOURS, BEHAVIOURS, NO_BEHAVIOUR, detect_behaviour
from dynaguide_jax.eval.rollout import LoopConfig, closed_loop, tabletop_env


def net_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine between the net xyz displacements (sums over steps of ``[..., T, >=3]`` actions); 0 where
    either is zero."""
    da, db = np.asarray(a)[..., :3].sum(-2), np.asarray(b)[..., :3].sum(-2)
    norm = np.linalg.norm(da, axis=-1) * np.linalg.norm(db, axis=-1)
    return np.where(norm > 0, (da * db).sum(-1) / np.where(norm > 0, norm, 1.0), 0.0)


def _batched(sample_fn: Callable, obs: dict, key, batch: int) -> np.ndarray:
    n = len(next(iter(obs.values())))
    fn = jax.jit(sample_fn)
    out = [np.asarray(fn({k: jnp.asarray(v[idx]) for k, v in obs.items()}, jax.random.fold_in(key, i)))[:n - i]
           for i, idx in padded_batches(n, min(batch, n))]
    return np.concatenate(out)


def open_loop_agreement(sample_fn: Callable, obs: dict, actions: np.ndarray, phase: np.ndarray, key: jax.Array, *,
                        first: int, executed: int, phases: int = 5, batch: int = 256) -> dict:
    """``obs`` ``{k: [N, To, ...]}`` histories, ``actions`` ``[N, Tp, A]`` the demonstrations' chunks from
    the same windows, ``phase`` ``[N]`` in [0, 1]. Returns the figures overall and per phase bin."""
    actions = np.asarray(actions, np.float32)
    phase = np.asarray(phase, np.float64)
    check_int("first", first, minimum=0)
    for name, value in (("executed", executed), ("phases", phases), ("batch", batch)):
        check_int(name, value)
    n = len(actions)
    if actions.ndim != 3 or n == 0 or phase.shape != (n,) or any(len(v) != n for v in obs.values()):
        raise ValueError(f"open_loop_agreement: obs {{k: [N, To, ...]}}, actions [N, Tp, A] and phase [N] need the "
                         f"same N > 0, got { {k: len(v) for k, v in obs.items()} }, {actions.shape} and {phase.shape}")
    if actions.shape[1] < first + executed:
        raise ValueError(f"chunks of {actions.shape[1]} steps cannot execute {executed} from index {first}")
    k1, k2 = jax.random.split(key)
    s1, s2 = _batched(sample_fn, obs, k1, batch), _batched(sample_fn, obs, k2, batch)
    if s1.shape[0] != n or s1.shape[1] < first + executed or s1.shape[2] != actions.shape[2]:
        raise ValueError(f"sample_fn returned chunks {s1.shape}; the demonstrations' are {actions.shape}")
    cut = slice(first, first + executed)
    a1, a2 = s1[:, cut], s2[:, cut]
    demo = actions[:, cut]
    to_demo, to_self = net_cosine(a1, demo), net_cosine(a1, a2)
    grip = (np.sign(a1[..., -1]) == np.sign(demo[..., -1])).mean(-1)
    err = ((a1 - demo) ** 2).mean((1, 2))
    mean_err = ((demo - demo.reshape(-1, demo.shape[-1]).mean(0)) ** 2).mean((1, 2))

    def figures(m):
        return {"n": int(m.sum()), "cosine_to_demo": float(np.median(to_demo[m])),
                "cosine_to_demo_above_0.8": float((to_demo[m] > 0.8).mean()),
                "cosine_to_resample": float(np.median(to_self[m])), "gripper_agreement": float(grip[m].mean()),
                "mse": float(err[m].mean()), "mse_mean_action": float(mean_err[m].mean())}

    edges = np.linspace(0.0, 1.0, phases + 1)
    bins = np.clip(np.searchsorted(edges, phase, side="right") - 1, 0, phases - 1)
    return {"overall": figures(np.ones(n, bool)),
            "by_phase": [{"phase": [float(edges[i]), float(edges[i + 1])], **figures(bins == i)}
                         for i in range(phases) if (bins == i).any()]}


def segment_windows(data, config, count: int) -> tuple[dict, np.ndarray, np.ndarray]:
    """``count`` evenly spaced windows of ``data`` (``EpisodeData`` of behaviour segments) as the policy
    trains on them (``policy.windows.window_indices``): ``(obs {k: [N, To, ...]}, actions [N, Tp, A],
    phase [N])``, phase = the frame's place between its segment's first and last frame."""
    from dynaguide_jax.policy.windows import check_episode_data, window_indices

    check_episode_data(data, config)
    check_int("count", count)
    n = len(data.actions)
    t = np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(np.int64))
    obs_idx, act_idx = window_indices(data, config, t)
    lo, hi = data.frame_start[t], data.frame_end[t] - 1
    phase = (t - lo) / np.maximum(hi - lo, 1)
    return {k: data.obs[k][obs_idx] for k in config.obs_keys}, data.actions[act_idx].astype(np.float32), phase


def segment_labels(behaviour: np.ndarray, episode_ends: np.ndarray) -> list[str]:
    """Each segment's behaviour: the per-step ``behaviour`` label at its last frame (bytes or str)."""
    out = []
    for e in np.asarray(episode_ends):
        v = behaviour[e - 1]
        out.append(v.decode() if isinstance(v, bytes) else str(v))
    return out


def completion_from_play(sample_fn: Callable, env: tabletop.TabletopConfig, robot_obs: np.ndarray,
                         scene_obs: np.ndarray, labels, episode_ends: np.ndarray, key: jax.Array, *,
                         fractions=(0.0, 0.5, 0.75), horizon: int = 84, obs_horizon: int = 2,
                         action_horizon: int = 14, repeats: int = 2, batch: int = 128) -> dict:
    """Closed-loop rollouts from the play's states at ``fractions`` of every articulated segment
    (``labels`` per segment, ``episode_ends`` exclusive ends into the per-frame ``robot_obs`` /
    ``scene_obs``), ``repeats`` rollouts each. Per fraction: the share whose first behaviour is the
    segment's, the share with none, and the behaviours detected, overall and per behaviour."""
    ends = np.asarray(episode_ends, np.int64)
    starts = np.r_[0, ends[:-1]]
    labels = list(labels)
    check_int("horizon", horizon)
    check_int("repeats", repeats)
    check_int("batch", batch)
    if len(labels) != len(ends):
        raise ValueError(f"{len(labels)} segment labels for {len(ends)} segments")
    if not (len(ends) and len(robot_obs) == len(scene_obs) == ends[-1]):
        raise ValueError(f"robot_obs ({len(robot_obs)} frames) and scene_obs ({len(scene_obs)}) must hold the "
                         f"segments' frames (episode_ends end at {ends[-1] if len(ends) else None})")
    bad = [f for f in fractions if not 0.0 <= f < 1.0]  # NaN too
    if bad or not fractions:
        raise ValueError(f"fractions must be in [0, 1), got {list(fractions)}")
    chosen = np.asarray([i for i, b in enumerate(labels) if b in ARTICULATED_BEHAVIOURS], np.int64)
    if not len(chosen):
        raise ValueError(f"no articulated segments among the labels ({sorted(set(labels))[:12]})")
    want = np.tile(np.asarray([BEHAVIOURS.index(labels[i]) for i in chosen]), repeats)
    loop = LoopConfig(horizon=horizon, obs_horizon=obs_horizon, action_horizon=action_horizon)
    env_fns = tabletop_env(env)

    @jax.jit
    def rollouts(robot, scene, k):
        states = jax.vmap(lambda r, s: tabletop.reset(jax.random.key(0), env, robot_obs=r, scene_obs=s))(robot, scene)
        out = closed_loop(env_fns, sample_fn, states, k, loop)
        return jax.vmap(lambda s, r: detect_behaviour(s, r).index)(out.scene_obs, out.robot_obs)

    report = []
    for fi, frac in enumerate(fractions):
        frame = np.tile(starts[chosen] + np.floor(frac * (ends[chosen] - starts[chosen])).astype(np.int64), repeats)
        n = len(frame)
        got = np.concatenate([np.asarray(rollouts(jnp.asarray(robot_obs[frame[idx]], jnp.float32),
                                                  jnp.asarray(scene_obs[frame[idx]], jnp.float32),
                                                  jax.random.fold_in(key, fi * 100003 + i)))[:n - i]
                              for i, idx in padded_batches(n, min(batch, n))])
        per = {}
        for b in sorted(set(want.tolist())):
            m = want == b
            per[BEHAVIOURS[b]] = {"n": int(m.sum()), "same": float((got[m] == b).mean()),
                                  "none": float((got[m] == NO_BEHAVIOUR).mean())}
        detected = {BEHAVIOURS[b]: float((got == b).mean()) for b in sorted(set(got.tolist()))}
        report.append({"fraction": float(frac), "n": int(len(got)), "same": float((got == want).mean()),
                       "none": float((got == NO_BEHAVIOUR).mean()), "detected": detected, "per_behaviour": per})
    return {"horizon": horizon, "repeats": repeats, "segments": int(len(chosen)), "by_fraction": report}


def format_policy_report(report: dict) -> str:
    """Markdown tables of ``open_loop`` (``open_loop_agreement``) and ``completion`` (``completion_from_play``)."""
    lines = ["Open loop: one chunk per held-out window vs the demonstration's actions (executed steps)", "",
             "| segment phase | n | cos(net tcp move, demo) median | share > 0.8 | cos(two samples) median "
             "| gripper agrees | MSE | MSE of the mean action |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    ol = report["open_loop"]
    for row in [*ol["by_phase"], {"phase": None, **ol["overall"]}]:
        name = "all" if row["phase"] is None else f"{row['phase'][0]:.1f}-{row['phase'][1]:.1f}"
        lines.append(f"| {name} | {row['n']} | {row['cosine_to_demo']:.2f} | {row['cosine_to_demo_above_0.8']:.0%} | "
                     f"{row['cosine_to_resample']:.2f} | {row['gripper_agreement']:.0%} | {row['mse']:.3f} | "
                     f"{row['mse_mean_action']:.3f} |")
    comp = report.get("completion")
    if comp:
        lines += ["", f"Closed loop from the held-out play's states ({comp['segments']} articulated segments x "
                  f"{comp['repeats']}, {comp['horizon']} steps): first behaviour detected", "",
                  "| start (fraction of the segment) | n | the segment's behaviour | none |",
                  "| --- | --- | --- | --- |"]
        for row in comp["by_fraction"]:
            lines.append(f"| {row['fraction']:.2f} | {row['n']} | {row['same']:.0%} | {row['none']:.0%} |")
    return "\n".join(lines)


def save_policy_report_plot(report: dict, path: str) -> str:
    """Agreement by segment phase (left) and completion by start fraction (right), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    comp = report.get("completion")
    fig, axes = plt.subplots(1, 2 if comp else 1, figsize=(10 if comp else 5, 3.6), squeeze=False)
    ax = axes[0, 0]
    rows = report["open_loop"]["by_phase"]
    mid = [sum(r["phase"]) / 2 for r in rows]
    ax.plot(mid, [r["cosine_to_demo"] for r in rows], "o-", label="sample vs demonstration")
    ax.plot(mid, [r["cosine_to_resample"] for r in rows], "s--", label="sample vs another sample")
    ax.plot(mid, [r["gripper_agreement"] for r in rows], "^:", label="gripper agrees (share)")
    ax.set(xlabel="phase of the segment (0 start, 1 end)", ylabel="median cosine / share",
           ylim=(-0.05, 1.05), title="open loop, held-out windows")
    ax.legend(fontsize=8)
    if comp:
        ax = axes[0, 1]
        fr = comp["by_fraction"]
        x = np.arange(len(fr))
        ax.bar(x - 0.2, [r["same"] for r in fr], 0.4, label="finishes the segment's behaviour")
        ax.bar(x + 0.2, [r["none"] for r in fr], 0.4, label="no behaviour")
        ax.set_xticks(x, [f"{r['fraction']:.2f}" for r in fr])
        ax.set(xlabel="start: fraction of the segment", ylabel="share of rollouts", ylim=(0, 1),
               title=f"closed loop from play states ({comp['horizon']} steps)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
