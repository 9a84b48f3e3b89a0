"""Work over candidates 0..n-1 in chunks, each chunk split across a pool of worker threads.

The best-of-N scorers (one score per candidate, or one per candidate and tile) share it: a chunk
bounds what the workers hold at once, and a pool of one thread runs the work in the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class ChunkedWorkers:
    def __init__(self, threads: int = 1, chunk: int = 256):
        self.threads, self.chunk = max(1, threads), max(1, chunk)
        self._pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None

    def run(self, n: int, work: Callable[[int, int], None]) -> None:
        """`work(a, b)` over candidates a..b-1, every chunk's parts across the workers, chunk by chunk."""
        for start in range(0, n, self.chunk):
            stop = min(n, start + self.chunk)
            bounds = np.linspace(start, stop, min(self.threads, stop - start) + 1).astype(int)
            parts = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
            if self._pool is None or len(parts) == 1:
                for part in parts:
                    work(*part)
            else:
                for future in [self._pool.submit(work, *part) for part in parts]:
                    future.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
