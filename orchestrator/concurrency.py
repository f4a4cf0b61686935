"""Bounded parallel map, in threads or in gevent greenlets, as the provider needs.

pyinfra runs commands on ``@local`` with gevent's subprocess, whose child watchers only
work on the main thread's default loop. A provider that drives its backend through
pyinfra operations (OrbStack) is therefore *cooperative*: its calls run as greenlets on
the main thread, its own subprocesses and sleeps are gevent's. Providers that call their
backend with plain subprocesses (Docker) run in threads.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def parallel_map(fn: Callable[[T], R], items: Iterable[T], limit: int, *, cooperative: bool = False) -> list[R]:
    items = list(items)
    if not items:
        return []
    size = max(1, min(limit, len(items)))
    if cooperative:
        from gevent.pool import Pool

        return list(Pool(size).imap(fn, items))
    with ThreadPoolExecutor(max_workers=size) as pool:
        return list(pool.map(fn, items))


def sleeper(cooperative: bool) -> Callable[[float], None]:
    if cooperative:
        import gevent

        return gevent.sleep
    return time.sleep
