"""Prepare the next batches on background threads while the accelerator runs the current step.

Reading a batch of cached features (a gather from a memory-mapped array) and copying it to the
devices are host work; done in the training loop's thread they add to every step. Here they run
``depth`` steps ahead on worker threads (numpy's gathers and JAX's transfers release the GIL), and
batches still come out in step order, so the data stream (and resuming it) is unchanged.
"""
from __future__ import annotations

import collections
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


class Prefetcher:
    """Iterate ``produce(i)`` for ``i`` in ``indices``, computed up to ``depth`` items ahead.

    ``depth=0`` produces each item when it is asked for. ``waited_s`` accumulates the time the
    consumer spent blocked on a batch that was not ready (the input pipeline's share of a step).
    Use as a context manager (or call ``close``) so worker threads end with the loop.
    """

    def __init__(self, produce: Callable[[int], T], indices: Iterable[int], depth: int = 2,
                 workers: int | None = None):
        if int(depth) < 0:
            raise ValueError(f"prefetch depth must be >= 0, got {depth}")
        if workers is not None and int(workers) < 1:
            raise ValueError(f"prefetch workers must be >= 1, got {workers}")
        self._produce, self._indices, self.depth = produce, iter(indices), int(depth)
        self._pool = ThreadPoolExecutor(max_workers=workers or self.depth, thread_name_prefix="prefetch") \
            if self.depth else None
        self._pending: collections.deque = collections.deque()
        self.waited_s = 0.0

    def _fill(self) -> None:
        while len(self._pending) < self.depth:
            i = next(self._indices, None)
            if i is None:
                return
            self._pending.append(self._pool.submit(self._produce, i))

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        t0 = time.perf_counter()
        if self._pool is None:
            i = next(self._indices, None)
            if i is None:
                raise StopIteration
            item = self._produce(i)
        else:
            self._fill()
            if not self._pending:
                raise StopIteration
            item = self._pending.popleft().result()  # re-raises a worker's exception here
            self._fill()  # keep `depth` batches in flight while the caller runs its step
        self.waited_s += time.perf_counter() - t0
        return item

    def close(self) -> None:
        for f in self._pending:
            f.cancel()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
