"""Fixed-size batches over N items for jitted evaluation: one shape, so one compile."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def padded_batches(n: int, batch: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, index [batch])`` per batch of ``range(n)``, the last one padded with index ``n - 1``;
    keep the first ``n - start`` rows of each result."""
    for i in range(0, n, batch):
        yield i, np.minimum(np.arange(i, i + batch), n - 1)
