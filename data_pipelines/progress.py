"""TFDS's own progress bars switched on or off around one dataset build."""
from __future__ import annotations

import contextlib

import tensorflow_datasets as tfds


@contextlib.contextmanager
def tfds_progress(enabled: bool):
    """Show (or hide) TFDS's progress bars inside the block; the previous setting comes back after."""
    from tensorflow_datasets.core.utils import tqdm_utils

    before = getattr(tqdm_utils, "_active", True)
    tfds.display_progress_bar(enabled)
    try:
        yield
    finally:
        tfds.display_progress_bar(before)
