"""Micro-batching: the aligned faces of concurrent requests are embedded together.

One worker thread owns the model's embedding call. A request puts its faces (N, 160, 160, 3) on a queue and
waits; the worker takes the first waiting item, then gathers more for at most ``wait_s`` (5 ms by default) or
until ``max_batch`` faces are gathered, embeds them in one call and hands each request its rows. Under load a
batch fills at once (no wait); a lone request waits at most ``wait_s``. A request's faces are never split
across batches, so one request larger than ``max_batch`` is embedded alone."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np

Embed = Callable[[np.ndarray], tuple[np.ndarray, Any]]


class MicroBatcher:
    """``embed(faces)`` -> (embeddings (N, D), attention or None), as ``fn`` gives them, batched across threads.
    ``stats``: batches and faces embedded (the mean batch size says how well it batches)."""

    def __init__(self, fn: Embed, max_batch: int = 32, wait_s: float = 0.005) -> None:
        self.fn, self.max_batch, self.wait_s = fn, max(1, int(max_batch)), max(0.0, float(wait_s))
        self._queue: queue.Queue[tuple[np.ndarray, Future[tuple[np.ndarray, Any]]] | None] = queue.Queue()
        self.stats = {"batches": 0, "faces": 0}
        self._thread = threading.Thread(target=self._run, name="partialface-embed", daemon=True)
        self._thread.start()

    def embed(self, faces: np.ndarray) -> tuple[np.ndarray, Any]:
        """Embed ``faces`` (N, 160, 160, 3) uint8 with the faces of other waiting requests; blocks until done."""
        fut: Future[tuple[np.ndarray, Any]] = Future()
        self._queue.put((faces, fut))
        return fut.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _gather(self, first: tuple[np.ndarray, Future[tuple[np.ndarray, Any]]]
                ) -> tuple[list[tuple[np.ndarray, Future[tuple[np.ndarray, Any]]]], bool]:
        items, n = [first], len(first[0])
        deadline = time.monotonic() + self.wait_s
        while n < self.max_batch:
            left = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return items, True
            if n + len(item[0]) > self.max_batch:
                self._queue.put(item)  # it starts the next batch (order among waiting requests barely matters)
                break
            items.append(item)
            n += len(item[0])
        return items, False

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            items, stop = self._gather(first)
            try:
                f, attention = self.fn(np.concatenate([faces for faces, _ in items]))
            except BaseException as e:  # every waiting request gets the error; the worker lives on
                for _, fut in items:
                    fut.set_exception(e)
            else:
                self.stats["batches"] += 1
                self.stats["faces"] += len(f)
                start = 0
                for faces, fut in items:
                    end = start + len(faces)
                    part = None if attention is None else tuple(a[start:end] for a in attention)
                    fut.set_result((f[start:end], part))
                    start = end
            if stop:
                return
