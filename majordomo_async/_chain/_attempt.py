"""One attempt on one target: the request fitted to it, bounded by the call's deadline
and the attempt timeout."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from .._exceptions import ProviderTimeoutError

if TYPE_CHECKING:
    from ._config import Target
    from ._loop import _Call

__all__ = ["OutOfTime", "attempt"]

T = TypeVar("T")


class OutOfTime(Exception):
    """An attempt ran out of time: the error to record, and whose budget ran out."""

    def __init__(self, error: ProviderTimeoutError, call_deadline: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.call_deadline = call_deadline


async def attempt(call: _Call, target: Target) -> object:
    """Run one attempt of `call`'s mode on `target`, bounded by the call's deadline and
    the attempt timeout; its (unchecked) result. (Unbounded attempts are run inline by
    the loop: no cancel scope, no extra coroutine.)

    Raises:
        OutOfTime: the call's deadline or the attempt timeout cut the attempt short.
    """
    mode, key = call.mode, target.key
    attempt_timeout = call.config.attempt_timeout
    deadline = call.deadline
    if attempt_timeout is not None:
        deadline = min(deadline, call.clock.now() + attempt_timeout)
    with call.clock.deadline_scope(deadline) as scope:
        try:
            # Fitting is inside the bounds: it may download an image.
            request = await call.fitter.fit(key, target.capabilities, streaming=mode.streaming)
            return await mode.run(target.model, request, key)
        except Exception:
            # A provider may turn our cancellation into its own error: still a timeout.
            if not scope.cancel_called:
                raise
    # Reached only when our scope fired and absorbed the attempt's cancellation.
    call_deadline = deadline >= call.deadline
    provider, _, model = key.partition("/")
    error = ProviderTimeoutError(
        "no answer before the call's deadline"
        if call_deadline
        else f"no answer within the attempt timeout ({attempt_timeout:g} s)",
        provider=provider,
        model=model,
    )
    raise OutOfTime(error, call_deadline)
