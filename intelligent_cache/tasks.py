"""Background work beside requests (refreshes, replays, the stats flusher), on asyncio or trio.

FastAPI runs on anyio, so an app may be served by either event loop. anyio has
no detached tasks (its task groups are scoped), so :class:`Background` spawns
on the running loop's own mechanism: an ``asyncio`` task, or a trio *system
task* (which lives until the run ends). Either way the owner can cancel and
await everything it spawned on shutdown, and a task that fails is its own
business: it must catch what it means to survive.
"""

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["Background", "Work"]

#: What runs in the background: a coroutine function of no arguments.
Work = Callable[[], Coroutine[Any, Any, None]]


class _TrioTask:
    """A trio system task that can be cancelled and awaited like an asyncio one."""

    def __init__(self, trio: Any, work: "Work", done: Callable[["_TrioTask"], None]) -> None:
        self._scope = trio.CancelScope()
        self._finished = trio.Event()
        self._done = done

        async def run() -> None:
            try:
                with self._scope:
                    await work()
            finally:
                self._finished.set()
                done(self)

        trio.lowlevel.spawn_system_task(run)

    def cancel(self) -> None:
        self._scope.cancel()

    async def wait(self) -> None:
        await self._finished.wait()


class Background:
    """The background tasks of one owner (a manager, the fail-open adapter)."""

    def __init__(self) -> None:
        self._tasks: set[Any] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, work: Work) -> None:
        """Run ``work()`` beside the current request, on the running loop."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not asyncio: trio (anyio supports no other loop)
            import trio

            self._tasks.add(_TrioTask(trio, work, self._tasks.discard))
            return
        task = loop.create_task(work())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Cancel every task still running and wait for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            if isinstance(task, _TrioTask):
                await task.wait()
        pending = [task for task in tasks if isinstance(task, asyncio.Task)]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
