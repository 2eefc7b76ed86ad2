"""config/process_cache.py: per-process caches that every process drops within a second of a change (the
two-process proof is tests/test_request_path.py::test_every_process_applies_a_change_within_a_second)."""
import threading
import time

import pytest
from django.core.cache import cache

from config import process_cache


@pytest.fixture
def ns():
    name = f"test-{time.monotonic_ns()}"
    return name, process_cache.ProcessCache(name)


def test_hits_do_not_call_the_loader_and_none_is_cached_too(ns):
    _, pc = ns
    loads = []
    loader = lambda key: loads.append(key)  # noqa: E731 (returns None: "no such row" is cached as well)
    assert pc.get("k", loader) is None and pc.get("k", loader) is None
    assert loads == ["k"]


def test_invalidate_drops_here_at_once_and_elsewhere_on_the_next_poll(ns):
    name, pc = ns
    pc.get("k", lambda key: 1)
    process_cache._watcher.poll()
    process_cache.invalidate(name)
    assert pc.peek("k") is process_cache.MISSING  # this process: at once
    pc.get("k", lambda key: 2)
    cache.set(process_cache.VERSION_KEY.format(name), "changed-by-another-process", timeout=None)
    assert pc.peek("k") == 2  # other processes' changes arrive through the watcher...
    process_cache._watcher.poll()
    assert pc.peek("k") is process_cache.MISSING  # ...within POLL_SECONDS


def test_a_load_that_raced_an_invalidation_is_not_kept(ns):
    name, pc = ns
    started, release = threading.Event(), threading.Event()

    def slow_loader(key):
        started.set()
        release.wait(5)
        return "stale"

    thread = threading.Thread(target=lambda: pc.get("k", slow_loader))
    thread.start()
    started.wait(5)
    process_cache.invalidate(name)  # the row changed while the loader was reading the old one
    release.set()
    thread.join()
    assert pc.peek("k") is process_cache.MISSING


def test_without_readable_versions_entries_expire_after_fresh_within(ns, monkeypatch):
    _, pc = ns
    pc.get("k", lambda key: 1)
    monkeypatch.setattr(process_cache._watcher, "_ok_at", float("-inf"))  # the watcher cannot reach Redis
    assert pc.peek("k") == 1  # just loaded: still trusted
    entry = pc._entries["k"]
    pc._entries["k"] = (entry[0], entry[1] - process_cache.FRESH_WITHIN - 0.01)
    assert pc.peek("k") is process_cache.MISSING  # older than FRESH_WITHIN: reloaded from the database


def test_the_watcher_thread_runs_once_per_process_and_polls(ns):
    name, pc = ns
    pc.peek("anything")
    assert process_cache._watcher._pid is not None
    before = process_cache._watcher._ok_at
    time.sleep(3 * process_cache.POLL_SECONDS)
    assert process_cache._watcher._ok_at > before
    assert [t.name for t in threading.enumerate()].count("process-cache-watcher") == 1
