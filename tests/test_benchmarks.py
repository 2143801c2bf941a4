"""The training and input-pipeline benchmarks run end to end and print consistent rows (their
figures are never asserted: speed is measured by running the scripts, not by tests)."""
import json
import os
import subprocess
import sys

import pytest

from dynaguide_jax.bench.dynamics_training import PEAK_BF16_TFLOPS, TrainBenchConfig, peak_for
from dynaguide_jax.bench.dynamics_training import run as run_training
from dynaguide_jax.bench.input_pipeline import InputBenchConfig, needed_rate
from dynaguide_jax.bench.input_pipeline import run as run_input
from dynaguide_jax.dynamics import DynamicsConfig
from dynaguide_jax.dynamics.model import flops_per_sample
from tests.test_cli import ENV


def test_training_benchmark_rows_cover_every_setting(capsys):
    printed = []
    rows = run_training(TrainBenchConfig(global_batch=(4,), steps=1, dtypes=("float32",), preset="small"),
                        emit=printed.append)
    assert [json.loads(p) for p in printed] == rows
    assert sorted((r["input"], r["variant"]) for r in rows) == [
        ("features", "fused"), ("features", "torch"), ("pixels", "fused"), ("pixels", "torch")]
    assert all(r["remat"] is False for r in rows)
    assert all(r["attention_dropout"] == 0.0 for r in rows if r["variant"] == "fused")
    for r in rows:
        assert r["bench"] == "dynamics_train_step" and r["attention"] == "xla"  # no cuDNN on a CPU
        assert r["samples_per_s"] == pytest.approx(r["global_batch"] / (r["step_ms"] / 1e3), rel=0.02)
        assert "mfu" not in r  # a CPU has no known peak
    assert capsys.readouterr().err.count("pallas rows skipped") == 1  # the default's third variant: GPU/TPU only
    with pytest.raises(ValueError, match="attention variants are 'torch', 'fused' and 'pallas'"):
        run_training(TrainBenchConfig(global_batch=(4,), steps=1, attention=("flash",), preset="small"))
    # a batch-size sweep with and without remat: one row per setting
    sweep = run_training(TrainBenchConfig(global_batch=(2, 4), steps=1, dtypes=("float32",), attention=("torch",),
                                          modes=("features",), remat=(False, True), preset="small"), emit=print)
    assert [(r["global_batch"], r["remat"]) for r in sweep] == [(2, False), (2, True), (4, False), (4, True)]


def test_peak_lookup():
    assert peak_for("NVIDIA H100 80GB HBM3", 0.0) == PEAK_BF16_TFLOPS["H100"]
    assert peak_for("TPU v5 lite", 0.0) == 197.0 and peak_for("cpu", 0.0) == 0.0
    assert peak_for("NVIDIA H100 80GB HBM3", 500.0) == 500.0


def test_input_benchmark_rows_and_feed_verdict(tmp_path):
    cfg = InputBenchConfig(frames=256, episode_length=64, global_batch=8, batches=2, prefetch=(0, 2),
                           directory=str(tmp_path))
    rows = run_input(cfg, emit=lambda _: None)
    assert [(r["feature_dtype"], r["prefetch"]) for r in rows] == [
        ("float16", 0), ("float16", 2), ("float32", 0), ("float32", 2)]
    need = needed_rate(DynamicsConfig())
    assert need == pytest.approx(0.4 * 989e12 / (3 * flops_per_sample(DynamicsConfig())))
    for r in rows:
        assert r["needed_samples_per_s_h100_40pct_mfu"] == round(need, 1)
        assert r["feeds_h100_at_40pct_mfu"] == (r["samples_per_s"] >= need)
        # bytes per sample: two frames of 256 x 384 features (+ proprio and actions, float32)
        feat_bytes = 2 * 256 * 384 * (2 if r["feature_dtype"] == "float16" else 4)
        per_sample = r["gb_per_s_to_devices"] * 1e9 / r["samples_per_s"]
        assert per_sample == pytest.approx(feat_bytes + 4 * (15 + 16 * 7), rel=0.05)
    assert list(tmp_path.iterdir()) == []  # the synthetic cache is removed afterwards


def test_input_benchmark_rejects_too_few_frames():
    with pytest.raises(ValueError, match="longer than the horizon"):
        run_input(InputBenchConfig(frames=100, episode_length=64))
    proc = subprocess.run([sys.executable, "benchmarks/input_pipeline.py", "--episode-length", "8"],
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode != 0 and "longer than the horizon 16" in proc.stderr


@pytest.mark.slow
def test_attention_dropout_statistics():
    study = _study_module()
    runs = lambda values: [{"mse": v, "retrieval": {}} for v in values]  # noqa: E731
    rows = study.summarise({"toy": {"torch": runs([1.0, 2.0, 3.0]), "fused": runs([2.0, 3.0, 5.0]),
                                    "pallas": runs([1.0, 2.0, 3.0])}})
    assert [(r["metric"], r["variant"]) for r in rows] == [
        ("mse", "fused"), ("mse", "pallas"), ("retrieval", "fused"), ("retrieval", "pallas")]
    assert rows[1]["difference"] == 0.0 and rows[1]["seed_sd"] == pytest.approx(1.0)
    row = rows[0]
    # pooled sd sqrt((1 + 7/3) / 2); t = (10/3 - 2) / (sd * sqrt(2/3)); per-seed differences 1, 1, 2
    sd = ((1 + 7 / 3) / 2) ** 0.5
    assert row["seed_sd"] == pytest.approx(sd) and row["difference"] == pytest.approx(4 / 3)
    assert row["t"] == pytest.approx((4 / 3) / (sd * (2 / 3) ** 0.5))
    assert row["paired_t"] == pytest.approx((4 / 3) / ((1 / 3) ** 0.5 / 3 ** 0.5))  # mean / (sd / sqrt(n)) = 4.0


def _study_module():
    import importlib.util

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.path.join(root, "benchmarks", "attention_dropout.py")
    spec = importlib.util.spec_from_file_location("attention_dropout", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_attention_dropout_study_trains_every_variant_and_resumes(tmp_path):
    """benchmarks/attention_dropout.py: every variant per seed (the attention dropout and its kernel are
    what differ), a summary table, JSON and plot; a rerun trains nothing, a rerun with another variant
    trains only that; bad input is one line, exit status 2."""
    out = tmp_path / "study"
    cmd = [sys.executable, "benchmarks/attention_dropout.py", "--datasets", "toy", "--seeds", "0", "1",
           "--toy-steps", "2", "--toy-episodes", "8", "--jobs", "1", "--out", str(out)]
    p = subprocess.run([*cmd, "--variants", "fused"], capture_output=True, text=True, env=ENV)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count(": done") == 4
    rows = {r["metric"]: r for r in json.loads((out / "summary.json").read_text())["rows"]}
    assert set(rows) == {"mse", "retrieval"} and rows["mse"]["variant"] == "fused"
    assert len(rows["mse"]["torch_values"]) == len(rows["mse"]["variant_values"]) == 2
    assert rows["mse"]["difference"] == pytest.approx(
        sum(rows["mse"]["variant_values"]) / 2 - sum(rows["mse"]["torch_values"]) / 2)
    assert "| toy | held-out future-patch MSE | 2 | fused |" in p.stdout
    more = subprocess.run(cmd, capture_output=True, text=True, env=ENV)  # default: every variant
    assert more.returncode == 0, more.stderr[-3000:]
    assert more.stdout.count(": done") == 2 and "pallas seed 0: done" in more.stdout
    for variant, rate, kernel in (("torch", 0.1, "xla"), ("fused", 0.0, "xla"), ("pallas", 0.1, "pallas")):
        run_cfg = json.loads((out / "toy" / f"{variant}-seed1" / "config.json").read_text())
        model = run_cfg["dynamics"]
        assert DynamicsConfig.from_dict(model).attention_dropout_rate == rate and model["dropout"] == 0.1
        assert run_cfg["train"]["attention"] == kernel and model["attention"] == "xla"  # the saved model: portable
    assert "| toy | held-out future-patch MSE | 2 | pallas |" in more.stdout
    assert (out / "summary.png").stat().st_size > 5_000
    again = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
    assert again.returncode == 0 and ": done" not in again.stdout and "| toy |" in again.stdout
    for flags, message in ((["--seeds", "0"], "at least two seeds"), (["--seeds", "0", "0"], "each once"),
                           (["--variants", "torch"], "needs a variant to compare"),
                           (["--jobs", "0"], "--jobs must be >= 1"),
                           (["--datasets", "tabletop", "--demo-dir", str(tmp_path / "none"), "--out",
                             str(tmp_path / "other")], "run `dynaguide demo --out-dir"),
                           ([*cmd[2:], "--toy-steps", "3"], "holds runs made with other settings")):
        bad = subprocess.run([sys.executable, "benchmarks/attention_dropout.py", *flags], capture_output=True,
                             text=True, env=ENV)
        assert bad.returncode == 2 and message in bad.stderr, (flags, bad.stderr[-500:])
    assert not (tmp_path / "other").exists()


def test_training_benchmark_flags_parse_sweeps():
    from dynaguide_jax.cli.bench import dynamics_training_parser
    from dynaguide_jax.cli.dataclass_args import dataclass_from_args

    args = dynamics_training_parser().parse_args(["--global-batch", "128", "256", "--remat", "false", "true"])
    cfg = dataclass_from_args(TrainBenchConfig, args)
    assert cfg.global_batch == (128, 256) and cfg.remat == (False, True)
    with pytest.raises(SystemExit):
        dynamics_training_parser().parse_args(["--remat", "maybe"])



def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def _spawn_child_code(pid_file, ignore_term: bool) -> str:
    """Python source: start a child that writes its pid to ``pid_file`` and sleeps (deaf to SIGTERM
    if ``ignore_term``), wait until it has written."""
    child = ("import os, signal, time; " + ("signal.signal(signal.SIGTERM, signal.SIG_IGN); " if ignore_term else "")
             + f"open({str(pid_file)!r}, 'a').write(str(os.getpid()) + chr(10)); time.sleep(600)")
    return (f"import os, subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {child!r}]); "
            f"[time.sleep(0.05) for _ in range(200) if not os.path.exists({str(pid_file)!r})]; ")


@pytest.fixture
def quick_kills(monkeypatch):
    from dynaguide_jax.bench import suite

    monkeypatch.setattr(suite, "GRACE_S", 1.0)
    return suite


def test_suite_bounds_every_step_kills_what_it_started_and_keeps_what_finished(tmp_path, quick_kills):
    from dynaguide_jax.bench.suite import SuiteStep, run_suite

    pid_files = [tmp_path / "pid_hangs", tmp_path / "pid_leaves_child"]  # one per step: each waits for its own
    rows = "import json; [print(json.dumps({'bench': 'x', 'batch': b, 'latency_ms': 2.5 * b})) for b in (1, 64)]"
    # prints a row, leaves a child deaf to SIGTERM, hangs: the limit kills the whole group, SIGKILL after the grace
    hang = (_spawn_child_code(pid_files[0], ignore_term=True) + "import json; print(json.dumps({'bench': 'y', "
            "'chunks_per_s': 7.0}), flush=True); time.sleep(600)")
    # exits 0, its child would live on
    leaves_child = _spawn_child_code(pid_files[1], ignore_term=False) + "print('done')"
    env_step = ("import json, os, sys; print(json.dumps({'bench': 'z', 'dtype': sys.argv[1], 'xla': os.environ["
                "'XLA_FLAGS']})); print(json.dumps({'bench': 'on stderr'}), file=sys.stderr)")
    steps = [SuiteStep("rows", rows, timeout_s=60), SuiteStep("hangs", hang, timeout_s=4),
             SuiteStep("fails", "import sys; print('boom', file=sys.stderr); sys.exit(3)"),
             SuiteStep("needs_file", rows, needs="no/such/file.py"), SuiteStep("leaves_child", leaves_child),
             SuiteStep("args", env_step, args=("bfloat16",), env=(("XLA_FLAGS", "--extra_flag"),)),
             SuiteStep("late", rows)]
    messages = []
    results = run_suite(steps, tmp_path / "out", budget_s=25, cwd=tmp_path, min_step_s=3.0, progress=messages.append)
    status = {r["name"]: r["status"] for r in results}
    assert status == {"rows": "ok", "hangs": "timeout", "fails": "failed", "needs_file": "skipped: no no/such/file.py",
                      "leaves_child": "ok", "args": "ok", "late": "ok"}
    child_pids = [int(f.read_text()) for f in pid_files]
    assert len(child_pids) == 2 and not any(_alive(p) for p in child_pids)  # both children killed with their group
    by_name = {r["name"]: r for r in results}
    assert 3.5 < by_name["hangs"]["seconds"] < 15 and by_name["hangs"]["rows"] == [{"bench": "y", "chunks_per_s": 7.0}]
    assert by_name["fails"]["returncode"] == 3
    (z,) = by_name["args"]["rows"]  # stdout only: the line on stderr is logged, not a row
    assert z["dtype"] == "bfloat16" and z["xla"] == os.environ["XLA_FLAGS"] + " --extra_flag"  # appended
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "results.jsonl", "summary.json", "summary.md"]
    lines = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [(x["suite_step"], x["bench"]) for x in lines] == [("rows", "x"), ("rows", "x"), ("hangs", "y"),
                                                             ("args", "z"), ("late", "x"), ("late", "x")]
    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary["steps"]] == [s.name for s in steps] and summary["budget_s"] == 25
    md = (out / "summary.md").read_text()
    assert "| rows | ok |" in md and "| hangs | timeout |" in md and "| latency_ms |" in md and "| 160 |" in md
    log = (out / "log.txt").read_text()
    assert "boom" in log and "XLA_FLAGS=--extra_flag python -c" in log and '"bench": "on stderr"' in log
    assert any("hangs" in m and "timeout" in m for m in messages)
    with pytest.raises(ValueError, match="budget_s must be > 0"):
        run_suite(steps, tmp_path / "o2", budget_s=0)


def test_suite_budget_skips_what_no_longer_fits(tmp_path, quick_kills):
    from dynaguide_jax.bench.suite import SuiteStep, run_suite

    steps = [SuiteStep("slow", "import time; time.sleep(30)", timeout_s=60), SuiteStep("next", "print(1)")]
    results = run_suite(steps, tmp_path, budget_s=4, cwd=tmp_path, min_step_s=1.0, progress=lambda m: None)
    assert [r["status"] for r in results] == ["timeout", "skipped: budget"]
    assert results[0]["seconds"] < 10


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_suite_stopped_from_outside_kills_the_running_step_and_records_it(tmp_path, sig):
    import signal
    import time

    pids, started = tmp_path / "pids", tmp_path / "started"
    hang = _spawn_child_code(pids, ignore_term=True) + f"open({str(started)!r}, 'w').close(); time.sleep(600)"
    driver = ("import sys; from dynaguide_jax.bench.suite import SuiteStep, run_suite; "
              f"run_suite([SuiteStep('first', 'print(1)'), SuiteStep('hangs', {hang!r}, timeout_s=300)], "
              f"{str(tmp_path / 'out')!r}, budget_s=300, min_step_s=1.0)")
    proc = subprocess.Popen([sys.executable, "-c", driver], env=ENV, stderr=subprocess.PIPE, text=True)
    for _ in range(600):
        if started.exists():
            break
        time.sleep(0.05)
    assert started.exists(), proc.stderr.read() if proc.poll() is not None else "the step did not start"
    step_pid = int(pids.read_text().split()[0])
    proc.send_signal(getattr(signal, sig))
    assert proc.wait(timeout=30) != 0
    assert not _alive(step_pid)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [(s["name"], s["status"]) for s in summary["steps"]] == [("first", "ok"), ("hangs", "interrupted")]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["log.txt", "results.jsonl", "summary.json",
                                                                    "summary.md"]  # no scratch left


def test_gpu_suite_steps_are_valid_benchmark_commands_and_the_cli_runs_its_first_step(tmp_path):
    from dynaguide_jax._checks import DTYPE_NAMES
    from dynaguide_jax.bench.dynamics_training import TrainBenchConfig
    from dynaguide_jax.bench.guided_inference import BenchConfig
    from dynaguide_jax.bench.input_pipeline import InputBenchConfig
    from dynaguide_jax.bench.suite import SuiteStep
    from dynaguide_jax.cli import bench
    from dynaguide_jax.cli import gpu_suite as gs
    from dynaguide_jax.cli.dataclass_args import dataclass_from_args
    from dynaguide_jax.dynamics.config import PALLAS_MODES
    from dynaguide_jax.dynamics.context import MODES
    from dynaguide_jax.layers import ATTENTION_IMPLEMENTATIONS

    checked = 0
    for step in gs.GPU_STEPS:  # every benchmark step's flags parse to a config with allowed values
        if step.code == gs.GUIDED:
            cfg = dataclass_from_args(BenchConfig, bench.guided_inference_parser().parse_args(list(step.args)))
            assert set(cfg.attention) <= set(ATTENTION_IMPLEMENTATIONS) and set(cfg.pallas) <= set(PALLAS_MODES)
            assert set(cfg.precompute) <= {"none", *MODES} and set(cfg.dtypes) <= set(DTYPE_NAMES), step.name
            assert cfg.stand_in or cfg.policy
        elif step.code == gs.TRAINING:
            cfg = dataclass_from_args(TrainBenchConfig, bench.dynamics_training_parser().parse_args(list(step.args)))
            assert set(cfg.attention) <= {"torch", "fused", "pallas"} and set(cfg.modes) <= {"features", "pixels"}
            assert set(cfg.dtypes) <= set(DTYPE_NAMES), step.name
        elif step.code == gs.INPUT:
            dataclass_from_args(InputBenchConfig, bench.input_pipeline_parser().parse_args(list(step.args)))
        else:
            continue
        checked += 1
    assert checked == len(gs.GPU_STEPS) - 2  # all but the environment and the compiled-kernel tests
    with pytest.raises(SystemExit) as exit_info:  # a benchmark with nothing to time is refused
        bench.run_guided_inference(["--stand-in", "false", "--policy", "false"])
    assert exit_info.value.code == 2
    assert [s.name for s in gs.select_steps(["unroll", "environment"])] == ["environment", "unroll"]
    with pytest.raises(ValueError, match="unknown suite step"):
        gs.select_steps(["nope"])
    with pytest.raises(ValueError, match="name must be"):
        SuiteStep("bad name", "pass")
    # the suite's own process never imports JAX (a backend it started would hold the accelerator's memory)
    no_jax = ("import sys; from dynaguide_jax.cli.gpu_suite import run_gpu_suite; run_gpu_suite(['--list']); "
              "assert not [m for m in sys.modules if m == 'jax' or m.startswith('jax.')], 'jax imported'")
    listed = subprocess.run([sys.executable, "-c", no_jax], capture_output=True, text=True, env=ENV)
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == len(gs.GPU_STEPS), listed.stderr
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "gpu_suite.py")
    bad = subprocess.run([sys.executable, script, "--budget-s", "-1"], capture_output=True, text=True, env=ENV)
    assert bad.returncode == 2 and "--budget-s must be > 0" in bad.stderr
    run = subprocess.run([sys.executable, script, "--steps", "environment", "--out", str(tmp_path)],
                         capture_output=True, text=True, env=ENV, timeout=120)
    assert run.returncode == 0, run.stderr
    (env_row,) = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert env_row["bench"] == "environment" and env_row["platform"] == "cpu" and env_row["devices"] >= 1
    assert "Device: " in (tmp_path / "summary.md").read_text()
