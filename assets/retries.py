"""Runs retried on transient storage errors, by policy rather than by hand.

A step that loses a commit race the store's own retries could not win, or that still read a
table version a takedown's cleanup removed meanwhile (`curation.store.transient`), asks
Dagster to run it again (`RetryRequested`): every write of the store is a replacement of a
scope, so a step that runs twice leaves what it leaves once. A takedown whose check still
finds a readable version holding an item (`TakedownIncomplete`) is retried the same way: the
run never reports success before the item is gone. Every other error fails the step as
before: a bad drop is not made good by running it again.
"""

from __future__ import annotations

import functools
import inspect
from contextlib import contextmanager

from dagster import RetryRequested

from curation.store import STORAGE_ERRORS, TakedownIncomplete, transient

STORAGE_RETRIES = 5  # retries of one step (the store already retried each commit RETRIES times)
STORAGE_RETRY_WAIT_S = 2.0


@contextmanager
def storage_retries():
    """Turn a transient storage error raised inside into a retry of the step."""
    try:
        yield
    except TakedownIncomplete as exc:
        raise RetryRequested(max_retries=STORAGE_RETRIES,
                             seconds_to_wait=STORAGE_RETRY_WAIT_S) from exc
    except STORAGE_ERRORS as exc:
        if not transient(exc):
            raise
        raise RetryRequested(max_retries=STORAGE_RETRIES,
                             seconds_to_wait=STORAGE_RETRY_WAIT_S) from exc


def retried_on_storage_errors(fn):
    """An asset's compute function under `storage_retries` (generators stay generators, and
    the signature Dagster reads for resources is the function's own: its annotations must be
    objects, not postponed strings, as Dagster resolves strings in this module)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def steps(*args, **kwargs):
            with storage_retries():
                yield from fn(*args, **kwargs)
        return steps

    @functools.wraps(fn)
    def step(*args, **kwargs):
        with storage_retries():
            return fn(*args, **kwargs)
    return step
