"""One base for objects that work as ``with``, ``async with`` and as a decorator of sync and async functions."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar

__all__ = ["SyncAsyncContext"]

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
