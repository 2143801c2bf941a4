"""Stage bookkeeping of the demo: each stage's artefacts live in ``OUT/<stage>/``; a finished stage
whose inputs did not change is skipped, an interrupted one resumes (the trainers and the feature
cache pick up their checkpoints), one whose inputs changed is rebuilt from scratch.

A stage's key hashes its own settings (``STAGE_FIELDS``) and its upstream stages' keys, so a change
upstream (another play seed) invalidates everything below it; ``STAGE_RECIPES`` revisions enter the
keys of the stages whose code changed what they build. ``OUT/<stage>/stage.json`` records
the key when the stage starts and ``"done": true`` when it finished.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time

from dynaguide_jax.demo.config import STAGE_DEPENDS, STAGE_FIELDS, STAGE_RECIPES, DemoConfig


RLDS_PATH_FILE = "path.txt"  # in OUT/rlds/: the built dataset's directory, relative to it


def stage_record(stage_dir: str) -> dict:
    """``stage_dir/stage.json`` (``{"key", "done", ...}``), ``{}`` when missing or unreadable."""
    try:
        with open(os.path.join(stage_dir, "stage.json")) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def rlds_path(rlds_stage_dir: str) -> str:
    """The dataset directory the ``rlds`` stage built (recorded in its ``RLDS_PATH_FILE``)."""
    with open(os.path.join(rlds_stage_dir, RLDS_PATH_FILE)) as f:
        return os.path.join(rlds_stage_dir, f.read().strip())


class Stages:
    def __init__(self, cfg: DemoConfig, out_dir: str, fresh: bool = False, log=print):
        self.cfg, self.out, self.log = cfg, os.path.abspath(out_dir), log
        os.makedirs(self.out, exist_ok=True)
        if fresh:
            for name in STAGE_FIELDS:
                shutil.rmtree(self.dir(name), ignore_errors=True)
        self.seconds: dict[str, float] = {}

    def dir(self, name: str) -> str:
        return os.path.join(self.out, name)

    def key(self, name: str) -> str:
        parts = [self.cfg.fingerprint(*STAGE_FIELDS[name]), *(self.key(d) for d in STAGE_DEPENDS[name])]
        if name in STAGE_RECIPES:  # stages whose code changed what it builds (unlisted stages keep their keys)
            parts.append(f"recipe {STAGE_RECIPES[name]}")
        return hashlib.sha256("/".join([name, *parts]).encode()).hexdigest()[:16]

    def _record(self, name: str) -> dict:
        return stage_record(self.dir(name))

    def done(self, name: str) -> bool:
        rec = self._record(name)
        return rec.get("key") == self.key(name) and rec.get("done") is True

    def run(self, name: str, title: str, fn):
        """Run ``fn(stage_dir)`` unless the stage is done; returns ``fn``'s value or ``None`` when skipped."""
        if self.done(name):
            self.log(f"[{name}] {title}: done earlier, reusing {self.dir(name)} (--fresh rebuilds)")
            return None
        rec, d = self._record(name), self.dir(name)
        if rec.get("key") != self.key(name) and os.path.exists(d):
            shutil.rmtree(d)  # built from other settings: its checkpoints must not be resumed
        elif os.path.exists(d):
            self.log(f"[{name}] resuming an interrupted run in {d}")
        os.makedirs(d, exist_ok=True)
        self._write(name, {"key": self.key(name), "done": False})
        self.log(f"[{name}] {title} ...")
        t0 = time.perf_counter()
        value = fn(d)
        self.seconds[name] = round(time.perf_counter() - t0, 1)
        self._write(name, {"key": self.key(name), "done": True, "seconds": self.seconds[name]})
        self.log(f"[{name}] done in {self.seconds[name]:.0f} s")
        return value

    def _write(self, name: str, record: dict) -> None:
        path = os.path.join(self.dir(name), "stage.json")
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.replace(path + ".tmp", path)
