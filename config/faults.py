"""Fault points: where tests and the fault benchmark make a process die as a crash would.

`IMAGEGATE_FAULTS=after_commit[,...]` in a process's environment makes `point("after_commit")` end the process at
once (os._exit: no cleanup, no reply), exactly between two steps a real crash could separate. Unset (production),
a point is one frozenset lookup. The points: after_commit (a request's rows are committed, its reply not yet stored
or sent: generation/pipeline/service.py).
"""
import os

_ACTIVE = frozenset(name for name in os.environ.get("IMAGEGATE_FAULTS", "").split(",") if name)


def point(name: str) -> None:
    if name in _ACTIVE:
        os._exit(137)
