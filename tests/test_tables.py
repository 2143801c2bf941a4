"""Result tables: Wilson intervals (against the closed form checked by hand and scipy's binomial
quantiles bracket), the results.json shape, markdown / CSV / plot / GIF outputs, bad input."""
import json

import numpy as np
import pytest

from dynaguide_jax.eval.tables import bar_plot, save_gif, summarize, wilson_interval, write_results

NAMES = ["button_on", "button_off", "no_behavior"]


def test_wilson_interval_known_values():
    # Wilson (1927) / Agresti & Coull (1998) worked example values: 0 of 10, 5 of 10, 10 of 10
    np.testing.assert_allclose(wilson_interval(0, 10), (0.0, 0.27753), atol=1e-4)
    np.testing.assert_allclose(wilson_interval(5, 10), (0.23659, 0.76341), atol=1e-4)
    np.testing.assert_allclose(wilson_interval(10, 10), (0.72247, 1.0), atol=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes <= n"):
        wilson_interval(3, 2)


def test_summary_files_and_plot(tmp_path):
    detected = {"base": {"button_on": [0, 1, 2, 2], "button_off": [1, 1, 0, 2]},
                "dynaguide": {"button_on": [0, 0, 0, 1], "button_off": [1, 1, 1, 1]}}
    res = summarize(detected, ["button_on", "button_off"], NAMES, experiment="ArticulatedParts", preset="tiny",
                    config={"seed": 0})
    b = res["methods"]["base"]["per_target"]["button_on"]
    assert b["success"] == 0.25 and b["n"] == 4 and b["distribution"] == {"button_on": 0.25, "button_off": 0.25,
                                                                          "no_behavior": 0.5}
    assert res["methods"]["dynaguide"]["mean_success"] == pytest.approx((0.75 + 1.0) / 2)
    assert res["methods"]["base"]["per_target"]["button_off"]["ci95"] == list(wilson_interval(2, 4))
    paths = write_results(res, str(tmp_path))
    assert json.loads(open(paths[0]).read()) == res
    md = open(paths[1]).read()
    assert "| button_on | 25% [5%, 70%] (n=4) | 75% [30%, 95%] (n=4) |" in md
    assert len(open(paths[2]).read().splitlines()) == 1 + 2 * 2 * 3
    assert bar_plot(res, str(tmp_path / "bar.png")) and (tmp_path / "bar.png").stat().st_size > 5000
    frames = np.random.default_rng(0).integers(0, 255, (5, 16, 16, 3), dtype=np.uint8)
    from PIL import Image

    gif = Image.open(save_gif(frames, str(tmp_path / "r.gif")))
    assert gif.n_frames == 5
    with pytest.raises(ValueError, match="not behaviours"):
        summarize(detected, ["door_left"], NAMES, experiment="x", preset="y", config={})
    with pytest.raises(KeyError, match="no rollouts for target"):
        summarize({"base": {}}, ["button_on"], NAMES, experiment="x", preset="y", config={})
    with pytest.raises(ValueError, match="uint8"):
        save_gif(frames.astype(np.float32), str(tmp_path / "bad.gif"))


def test_bad_detections_name_the_input():
    names = ["a", "b"]
    ok = dict(experiment="e", preset="p", config={})
    for bad in ([0, 5], [0, -1], [0.5, 1.0], [np.nan]):
        with pytest.raises(ValueError, match=r"detected\['m'\]\['a'\] must hold integer indices in \[0, 2\)"):
            summarize({"m": {"a": bad}}, ["a"], names, **ok)
    with pytest.raises(ValueError, match="targets must be a non-empty list"):
        summarize({"m": {"a": [0]}}, "a", names, **ok)
    with pytest.raises(ValueError, match="detected must be a non-empty dict"):
        summarize({}, ["a"], names, **ok)
    with pytest.raises(TypeError, match=r"detected\['m'\] must be a dict"):
        summarize({"m": [0]}, ["a"], names, **ok)
    with pytest.raises(TypeError, match="must be integers"):
        wilson_interval(1.5, 3)
