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


def segment_queries(windows: DynamicsWindows, labels: np.ndarray, segments: np.ndarray):
    """Last frames of the labelled segments (label != ""), their labels and segment ids, and the
    query window's start ``H`` frames before the last frame (``segment_end`` windows: at least the
    segment's first frame; ``horizon`` windows: -1 where that leaves the episode)."""
    data = windows.data
    labels = np.asarray([x.decode() if isinstance(x, bytes) else str(x) for x in labels])
    episode = np.searchsorted(data.episode_ends, np.arange(data.num_frames), side="right")
    key = episode.astype(np.int64) * (int(segments.max()) + 2) + segments  # segment ids may restart per episode
    labelled = (labels != "") & (segments >= 0)
    last = np.flatnonzero(labelled & np.r_[key[1:] != key[:-1], True])
    if windows.target == "segment_end":
        first = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        start = np.maximum(last - windows.horizon, first[np.searchsorted(first, last, side="right") - 1])
        # a query predicts its own segment's end only when the segment is the window's episode
        start = np.where(windows.target_frame(start) == last, start, -1)
    else:
        start = last - windows.horizon
        start = np.where(start >= data.frame_start[last], start, -1)
    return last, labels[last], key[last], start


def evaluate_dynamics(config: DynamicsConfig, params, windows: DynamicsWindows, *, labels=None, segments=None,
                      sigma: float = 30.0, distance: str = "l2", max_windows: int | None = 2048,
                      batch_size: int = 64, progress: bool = True) -> dict:
    """Prediction error over (at most ``max_windows``, evenly spaced) windows and, with per-frame
    behaviour ``labels`` and ``segments``, behaviour retrieval accuracy (module doc). JSON-able."""
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
    return report


def behaviour_retrieval(config: DynamicsConfig, params, windows: DynamicsWindows, labels: np.ndarray,
                        segments: np.ndarray, sigma: float, distance: str, batch_size: int) -> dict:
    last, names, seg, start = segment_queries(windows, labels, segments)
    goals = np.asarray(windows.features[last][:, : config.predicted_tokens], np.float32)
    counts = {n: int((names == n).sum()) for n in sorted(set(names))}
    classes = [n for n, k in counts.items() if k >= 2]  # a query needs another segment of its behaviour
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
    return "\n".join(lines)


def save_report_plot(report: dict, path: str) -> str:
    """Error histogram (prediction vs. 'nothing moves') and, when computed, the confusion matrix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = report["retrieval"]
    panels = 1 if "skipped" in r else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), squeeze=False)
    ax = axes[0, 0]
    bins = np.histogram_bin_edges(np.r_[report["per_window_mse"], report["per_window_mse_current_frame"]], 30)
    ax.hist(report["per_window_mse_current_frame"], bins, alpha=0.6, label="current frame (nothing moves)")
    ax.hist(report["per_window_mse"], bins, alpha=0.6, label="dynamics prediction")
    ax.set(xlabel="future-patch MSE per window", ylabel="windows", title="prediction error")
    ax.legend()
    if panels == 2:
        ax = axes[0, 1]
        m = np.asarray(r["confusion_prediction"])
        ax.imshow(m, cmap="Blues")
        ax.set(xticks=range(len(r["classes"])), yticks=range(len(r["classes"])), xlabel="retrieved",
               ylabel="true behaviour", title=f"retrieval from predictions ({r['accuracy_prediction']:.0%})")
        ax.set_xticklabels(r["classes"], rotation=45, ha="right")
        ax.set_yticklabels(r["classes"])
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > m.max() / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
