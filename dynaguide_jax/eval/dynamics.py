"""Offline evaluation of a latent dynamics model on held-out episodes (no simulator needed).

Two questions to answer before steering a policy with a model:

1. How well does it predict? Per-window MSE between the predicted and the encoded future patches,
   beside the "nothing moves" baseline that predicts the current frame's patches.
2. Does its prediction tell behaviours apart, which is what guidance relies on? Every labelled
   segment gives one query: the window of ``H`` demonstrated actions ending at the segment's last
   frame (for a ``segment_end`` model, the original's, whose target is that last frame, segments
   shorter than ``H`` are queried from their first frame). Its prediction is scored against each
   behaviour's goal set (the final-frame features of the OTHER segments of that behaviour) with
   the guidance metric, normalised by the set size
   (log-mean-exp, so large sets are not favoured), and the best-scoring behaviour is the guess.
   Accuracy is reported for the prediction, the current frame (what is known without dynamics) and
   the true future frame (an upper bound for this goal set and metric).
3. Does the prediction use the actions? Guidance moves the action chunk along the gradient of the
   prediction, so a model that reads the outcome from the observation alone cannot steer. For a
   ``segment_end`` model, each labelled segment is queried at fractions (``phases``) of its length,
   once with its own chunk and once with the chunk of a segment of ANOTHER behaviour queried at the
   same phase; retrieval from both predictions (and the current frame), and how far swapping the
   chunk moves the prediction relative to its error, say where in a behaviour the actions decide.
"""
from __future__ import annotations

import numpy as np

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

from dynaguide_jax.data.windows import DynamicsWindows
from dynaguide_jax.dynamics.config import DynamicsConfig
from dynaguide_jax.dynamics.model import predict_future_patches
from dynaguide_jax.eval.batching import padded_batches
from dynaguide_jax.guidance.metric import pairwise_distance


# one compiled program per (config, shapes), shared by the error and the retrieval passes
_predict = jax.jit(predict_future_patches, static_argnums=0)
ACTION_USE_PHASES = (0.0, 0.25, 0.5, 0.75)  # fractions of a segment where the actions' part is measured


def predict_windows(config: DynamicsConfig, params, windows: DynamicsWindows, starts: np.ndarray,
                    batch_size: int = 64, progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(predicted, current, future)`` patches ``[N, P', D]`` for the windows starting at ``starts``
    (batched and jitted; the last batch is padded so one program serves all)."""
    p = config.predicted_tokens
    pred, cur, fut = [], [], []
    n = len(starts)
    for i, idx in tqdm(padded_batches(n, batch_size), total=-(-n // batch_size), desc="evaluate dynamics",
                       unit="batch", disable=None if progress else True):
        batch, keep = windows.at(starts[idx]), n - i
        out = _predict(config, params, batch["patches"], batch.get("proprio"), batch["actions"])
        pred.append(np.asarray(out)[:keep])
        cur.append(batch["patches"][:keep, :p])
        fut.append(batch["future_patches"][:keep, :p])
    return tuple(np.concatenate(x) for x in (pred, cur, fut))


def behaviour_scores(queries: np.ndarray, query_segments: np.ndarray, goals: np.ndarray, goal_labels: np.ndarray,
                     goal_segments: np.ndarray, classes: list[str], sigma: float, distance: str = "l2") -> np.ndarray:
    """``[Q, C]`` log-mean-exp guidance scores of each query against each class's goals, leaving out
    the goals of the query's own segment (``-inf`` where a class has no other goal)."""
    d = np.asarray(pairwise_distance(jnp.asarray(queries.reshape(len(queries), -1)),
                                     jnp.asarray(goals.reshape(len(goals), -1)), distance))
    logits = np.where(query_segments[:, None] == goal_segments[None], -np.inf, -d / sigma)
    scores = np.full((len(queries), len(classes)), -np.inf)
    for c, name in enumerate(classes):
        sel = logits[:, goal_labels == name]
        n = np.isfinite(sel).sum(1)
        lme = np.asarray(jax.nn.logsumexp(jnp.asarray(sel), axis=1)) - np.log(np.maximum(n, 1))
        scores[:, c] = np.where(n > 0, lme, -np.inf)
    return scores


def labelled_segments(windows: DynamicsWindows, labels: np.ndarray, segments: np.ndarray):
    """``(first, last, names, keys)`` of the labelled segments (label != ""): their first and last
    frames, labels and ids unique over the split (segment ids may restart per episode)."""
    data = windows.data
    labels = np.asarray([x.decode() if isinstance(x, bytes) else str(x) for x in labels])
    segments = np.asarray(segments)
    episode = np.searchsorted(data.episode_ends, np.arange(data.num_frames), side="right")
    key = episode.astype(np.int64) * (int(segments.max()) + 2) + segments
    change = key[1:] != key[:-1]
    starts, ends = np.flatnonzero(np.r_[True, change]), np.flatnonzero(np.r_[change, True])
    keep = (labels[ends] != "") & (segments[ends] >= 0)
    return starts[keep], ends[keep], labels[ends[keep]], key[ends[keep]]


def segment_queries(windows: DynamicsWindows, labels: np.ndarray, segments: np.ndarray):
    """Last frames of the labelled segments (label != ""), their labels and segment ids, and the
    query window's start ``H`` frames before the last frame (``segment_end`` windows: at least the
    segment's first frame; ``horizon`` windows: -1 where that leaves the episode)."""
    first, last, names, keys = labelled_segments(windows, labels, segments)
    if windows.target == "segment_end":
        start = np.maximum(last - windows.horizon, first)
        # a query predicts its own segment's end only when the segment is the window's episode
        start = np.where(windows.target_frame(start) == last, start, -1)
    else:
        start = last - windows.horizon
        start = np.where(start >= windows.data.frame_start[last], start, -1)
    return last, names, keys, start


def evaluate_dynamics(config: DynamicsConfig, params, windows: DynamicsWindows, *, labels=None, segments=None,
                      sigma: float = 30.0, distance: str = "l2", max_windows: int | None = 2048,
                      batch_size: int = 64, progress: bool = True, phases=ACTION_USE_PHASES) -> dict:
    """Prediction error over (at most ``max_windows``, evenly spaced) windows and, with per-frame
    behaviour ``labels`` and ``segments``, behaviour retrieval accuracy and the actions' part in it at
    ``phases`` of the segments (module doc). JSON-able."""
    _check_phases(phases)  # before any work
    valid = windows.valid
    if max_windows is not None and len(valid) > max_windows:
        valid = valid[np.linspace(0, len(valid) - 1, max_windows).round().astype(int)]
    pred, cur, fut = predict_windows(config, params, windows, valid, batch_size, progress)
    mse = ((pred - fut) ** 2).mean(axis=(1, 2))
    still = ((cur - fut) ** 2).mean(axis=(1, 2))
    report = {"windows": int(len(valid)), "horizon": windows.horizon, "target": windows.target,
              "mse": float(mse.mean()), "mse_current_frame": float(still.mean()),
              "skill_vs_current_frame": float(1.0 - mse.mean() / max(still.mean(), 1e-12)),
              "per_window_mse": mse.round(6).tolist(), "per_window_mse_current_frame": still.round(6).tolist()}
    if labels is None or segments is None:
        report["retrieval"] = {"skipped": "the episodes carry no behaviour labels"}
        return report
    report["retrieval"] = behaviour_retrieval(config, params, windows, np.asarray(labels), np.asarray(segments),
                                              sigma, distance, batch_size)
    report["action_use"] = action_use(config, params, windows, np.asarray(labels), np.asarray(segments), sigma,
                                      distance, phases, batch_size)
    return report


def _goal_classes(config: DynamicsConfig, windows: DynamicsWindows, last: np.ndarray, names: np.ndarray):
    """``(goals, counts, classes)``: the segment ends' predicted-token features (every segment's goal), the
    segments per behaviour, and the behaviours a query can be scored for (another segment of it exists)."""
    goals = np.asarray(windows.features[last][:, : config.predicted_tokens], np.float32)
    counts = {n: int((names == n).sum()) for n in sorted(set(names))}
    return goals, counts, [n for n, k in counts.items() if k >= 2]


def behaviour_retrieval(config: DynamicsConfig, params, windows: DynamicsWindows, labels: np.ndarray,
                        segments: np.ndarray, sigma: float, distance: str, batch_size: int) -> dict:
    last, names, seg, start = segment_queries(windows, labels, segments)
    goals, counts, classes = _goal_classes(config, windows, last, names)
    use = np.flatnonzero(np.isin(names, classes) & (start >= 0))
    if len(classes) < 2 or len(use) == 0:
        return {"skipped": f"needs >= 2 behaviours with >= 2 segments each (segments per behaviour: {counts})",
                "segments": counts}
    pred, cur, fut = predict_windows(config, params, windows, start[use], batch_size, progress=False)
    truth = np.asarray([classes.index(n) for n in names[use]])
    out = {"sigma": sigma, "distance": distance, "classes": classes, "segments": counts, "queries": int(len(use)),
           "chance": 1.0 / len(classes)}
    for name, q in (("prediction", pred), ("current_frame", cur), ("true_future", fut)):
        guess = behaviour_scores(q, seg[use], goals, names, seg, classes, sigma, distance).argmax(1)
        out[f"accuracy_{name}"] = float((guess == truth).mean())
        if name == "prediction":
            confusion = np.zeros((len(classes), len(classes)), int)
            np.add.at(confusion, (truth, guess), 1)
            out["confusion_prediction"] = confusion.tolist()
    return out


def action_use(config: DynamicsConfig, params, windows: DynamicsWindows, labels: np.ndarray, segments: np.ndarray,
               sigma: float, distance: str = "l2", phases=ACTION_USE_PHASES, batch_size: int = 64,
               seed: int = 0) -> dict:
    """Retrieval at ``phases`` of each labelled segment with its own action chunk and with another
    behaviour's (module doc, 3). ``segment_end`` models only; JSON-able."""
    if windows.target != "segment_end":
        return {"skipped": "only for segment_end models (a horizon model's target is not the segment's outcome)"}
    phases = _check_phases(phases)
    first, last, names, keys = labelled_segments(windows, labels, segments)
    goals, counts, classes = _goal_classes(config, windows, last, names)
    own = np.isin(names, classes) & (windows.target_frame(first) == last)  # the segment is the window's episode
    if len(set(names[own])) < 2:  # a query needs a donor of another behaviour
        return {"skipped": "needs segments of >= 2 behaviours (with >= 2 segments each) that are their windows' "
                           f"episodes (segments per behaviour: {counts})"}
    use = np.flatnonzero(own)
    truth = np.asarray([classes.index(n) for n in names[use]])
    rng = np.random.default_rng(seed)
    # each query borrows the chunk of a random query of another behaviour, at the same phase
    donor = np.asarray([rng.choice(np.flatnonzero(truth != t)) for t in truth])
    rows = []
    for f in phases:
        t = first[use] + np.floor(f * (last[use] - first[use] + 1)).astype(np.int64)
        pred, cur, fut = predict_windows(config, params, windows, t, batch_size, progress=False)
        swapped = _predict_with_actions(config, params, windows, t, windows.at(t[donor])["actions"], batch_size)
        row = {"phase": f, "queries": int(len(use))}
        for name, q in (("own_actions", pred), ("other_actions", swapped), ("current_frame", cur),
                        ("true_future", fut)):
            guess = behaviour_scores(q, keys[use], goals, names, keys, classes, sigma, distance).argmax(1)
            row[f"accuracy_{name}"] = float((guess == truth).mean())
        err = np.linalg.norm((pred - fut).reshape(len(t), -1), axis=1).mean()
        moved = np.linalg.norm((pred - swapped).reshape(len(t), -1), axis=1).mean()
        row["swap_change_over_error"] = float(moved / max(err, 1e-12))
        rows.append(row)
    return {"sigma": sigma, "distance": distance, "classes": classes, "chance": 1.0 / len(classes), "phases": rows}


def _check_phases(phases) -> list[float]:
    phases = [float(f) for f in phases]
    if not phases or any(not 0.0 <= f < 1.0 for f in phases):
        raise ValueError(f"phases must be fractions of a segment in [0, 1), got {phases}")
    return phases


def _predict_with_actions(config, params, windows: DynamicsWindows, starts: np.ndarray, actions: np.ndarray,
                          batch_size: int) -> np.ndarray:
    """Predictions for the windows at ``starts`` with ``actions [N, H, A]`` in place of their own."""
    out, n = [], len(starts)
    for i, idx in padded_batches(n, batch_size):
        batch = windows.at(starts[idx])
        z = _predict(config, params, batch["patches"], batch.get("proprio"), actions[idx])
        out.append(np.asarray(z)[: n - i])
    return np.concatenate(out)


def format_report(report: dict) -> str:
    target = {"segment_end": "segment end", "horizon": f"frame t+{report['horizon']}"}[report.get("target", "horizon")]
    lines = [f"dynamics model on {report['windows']} held-out windows (horizon {report['horizon']}, "
             f"target: {target}):",
             f"  future-patch MSE            {report['mse']:.5f}",
             f"  'nothing moves' baseline    {report['mse_current_frame']:.5f}",
             f"  skill vs. baseline          {report['skill_vs_current_frame']:+.3f}  (1 = perfect, 0 = no better)"]
    r = report["retrieval"]
    if "skipped" in r:
        return "\n".join(lines + [f"behaviour retrieval skipped: {r['skipped']}"])
    lines += [f"behaviour retrieval ({r['queries']} segment ends, {len(r['classes'])} behaviours, "
              f"sigma {r['sigma']:g}, {r['distance']}):",
              f"  from the prediction         {r['accuracy_prediction']:.1%}",
              f"  from the current frame      {r['accuracy_current_frame']:.1%}  (no dynamics)",
              f"  from the true future frame  {r['accuracy_true_future']:.1%}  (upper bound)",
              f"  chance                      {r['chance']:.1%}"]
    u = report.get("action_use")
    if u is None:
        return "\n".join(lines)
    if "skipped" in u:
        return "\n".join(lines + [f"action use skipped: {u['skipped']}"])
    lines += ["does the prediction use the actions? retrieval at a fraction of each segment, with its own chunk and "
              "with another behaviour's:",
              "  phase  queries  own chunk  other chunk  current frame  true end  swap moves prediction"]
    for row in u["phases"]:
        lines.append(f"  {row['phase']:5.2f}  {row['queries']:7d}  {row['accuracy_own_actions']:9.1%}  "
                     f"{row['accuracy_other_actions']:11.1%}  {row['accuracy_current_frame']:13.1%}  "
                     f"{row['accuracy_true_future']:8.1%}  {row['swap_change_over_error']:.2f} x its error")
    return "\n".join(lines)


def save_report_plot(report: dict, path: str) -> str:
    """Error histogram (prediction vs. 'nothing moves') and, when computed, the confusion matrix and the
    retrieval against the fraction of the segment (own chunk vs another behaviour's)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r, u = report["retrieval"], report.get("action_use", {"skipped": ""})
    panels = 1 if "skipped" in r else 2 if "skipped" in u else 3
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), squeeze=False)
    ax = axes[0, 0]
    bins = np.histogram_bin_edges(np.r_[report["per_window_mse"], report["per_window_mse_current_frame"]], 30)
    ax.hist(report["per_window_mse_current_frame"], bins, alpha=0.6, label="current frame (nothing moves)")
    ax.hist(report["per_window_mse"], bins, alpha=0.6, label="dynamics prediction")
    ax.set(xlabel="future-patch MSE per window", ylabel="windows", title="prediction error")
    ax.legend()
    if panels >= 2:
        ax = axes[0, 1]
        m = np.asarray(r["confusion_prediction"])
        ax.imshow(m, cmap="Blues")
        ax.set(xticks=range(len(r["classes"])), yticks=range(len(r["classes"])), xlabel="retrieved",
               ylabel="true behaviour", title=f"retrieval from predictions ({r['accuracy_prediction']:.0%})")
        ax.set_xticklabels(r["classes"], rotation=45, ha="right")
        ax.set_yticklabels(r["classes"])
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > m.max() / 2 else "black")
    if panels == 3:
        ax, x = axes[0, 2], [row["phase"] for row in u["phases"]]
        for key, label, style in (("own_actions", "prediction, own chunk", "o-"),
                                  ("other_actions", "prediction, another behaviour's chunk", "s-"),
                                  ("current_frame", "current frame", "^:"), ("true_future", "true end frame", "--")):
            ax.plot(x, [row[f"accuracy_{key}"] for row in u["phases"]], style, label=label)
        ax.axhline(u["chance"], color="grey", lw=0.8, label="chance")
        ax.set(xlabel="query at this fraction of the segment", ylabel="behaviour retrieval", ylim=(0, 1.02),
               title="does the prediction use the actions?")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
