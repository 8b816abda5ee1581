"""Context that follows the work: one base for ``with``/``async with``/decorator objects, and executors.

- :class:`SyncAsyncContext`: subclasses write ``__enter__``/``__exit__``; the async forms and the
  decorator of sync and async functions follow (``timed``, ``CircuitBreaker``).
- :func:`copying_context`: a ``loop.run_in_executor`` that carries the caller's context into the thread
  (installed on asyncio's event loops while a pipeline runs, by :mod:`qm_otel.integrations.patches`).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar

__all__ = ["SyncAsyncContext", "copying_context"]

P = ParamSpec("P")
R = TypeVar("R")


class SyncAsyncContext:
    """Subclasses implement ``__enter__``/``__exit__``; the async forms and the decorator follow.

    The decorator enters ``self._for_call()`` around each call: ``self`` unless a subclass needs a
    fresh instance per call (state that must not be shared between concurrent calls).
    """

    def __enter__(self) -> Self:
        raise NotImplementedError

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def _for_call(self) -> SyncAsyncContext:
        return self

    def __call__(self, func: Callable[P, R]) -> Callable[P, R]:
        """Wrap a sync or async function so each call runs inside this context."""
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def wrapped_coroutine(*args: P.args, **kwargs: P.kwargs) -> Any:
                async with self._for_call():
                    return await func(*args, **kwargs)

            return wrapped_coroutine  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
            with self._for_call():
                return func(*args, **kwargs)

        return wrapped


def copying_context(run_in_executor: Callable[..., R]) -> Callable[..., R]:
    """``run_in_executor`` that runs the function in a copy of the caller's context (OTel span, correlation).

    ``asyncio.to_thread`` and Starlette's thread pool copy the context already; ``run_in_executor``
    does not, so log records written there would lose their trace and correlation IDs.
    """

    @functools.wraps(run_in_executor)
    def in_callers_context(self: Any, executor: Any, func: Callable[..., Any], *args: Any) -> R:
        return run_in_executor(self, executor, contextvars.copy_context().run, func, *args)

    return in_callers_context
