"""The uvicorn server of ``statusbridge serve``: ends event streams on exit, ticks once a second.

Stock uvicorn waits for open responses before it stops, and an event stream never ends
by itself: ``handle_exit`` ends them first. Its main loop also wakes ten times a second
(to refresh the Date header and to notice a stop), which is most of an idle server's
CPU; here it wakes once a second, and at once when asked to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from statusbridge.web._app import end_streams

__all__ = ["TICK_SECONDS", "WebServer"]

TICK_SECONDS = 1.0
_TICKS_PER_SECOND = 10  # what uvicorn's on_tick counts in (it refreshes the date every 10)


class WebServer(uvicorn.Server):
    """``uvicorn.Server`` for an app from ``create_app``."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self._statusbridge_app = app
        self._stop_asked: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_asked = asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + _TICKS_PER_SECOND) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_asked.wait(), TICK_SECONDS)
            should_exit = await self.on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self.stop()

    def stop(self) -> None:
        """Stop serving, from any thread (what Ctrl-C does)."""
        end_streams(self._statusbridge_app)
        self.should_exit = True
        loop, asked = self._loop, self._stop_asked
        if loop is not None and asked is not None:
            with contextlib.suppress(RuntimeError):  # its loop is closed: it stopped already
                loop.call_soon_threadsafe(asked.set)
