"""Helpers for tests that drive the ``dynaguide`` command in subprocesses."""
import signal
import time


def kill_after_checkpoint(proc, checkpoint_dir, min_step: int, timeout: float = 600) -> None:
    """SIGKILL ``proc`` as soon as an orbax checkpoint of step >= ``min_step`` exists (no clean
    shutdown), and assert it was still running then."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        steps = [int(p.name) for p in checkpoint_dir.glob("*") if p.name.isdigit()] if checkpoint_dir.exists() else []
        if steps and max(steps) >= min_step:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
