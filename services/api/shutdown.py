"""Tell long-lived answers (Server-Sent Events) that the server is stopping, so they end at once.

uvicorn's graceful shutdown stops listening, asks each connection to finish its request
(`shutdown()` of the protocol, services/api/connections.py) and waits up to its timeout for them:
a stream that never ends would hold the process that long, then be cut. The protocol's
`shutdown()` calls `begin()` here, which sets the stop event of every app of this process (each
app registers one in its lifespan, services/api/app.py); an event stream waits on it beside its
events and ends cleanly. The lifespan's own end sets it too (in-process tests, other servers).
"""

from __future__ import annotations

import asyncio

_events: set[asyncio.Event] = set()


def register() -> asyncio.Event:
    """A stop event for one app, set by begin()."""
    event = asyncio.Event()
    _events.add(event)
    return event


def unregister(event: asyncio.Event) -> None:
    event.set()
    _events.discard(event)


def begin() -> None:
    """The server is stopping: set every registered stop event."""
    for event in list(_events):
        event.set()
