"""One attempt on one target: the request fitted to it, bounded by the call's deadline,
the attempt timeout and the first-token limit."""

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
    """Run one attempt of `call`'s mode on `target` within its time limits; its
    (unchecked) result. (Attempts with no limit at all are run inline by the loop: no
    cancel scope, no extra coroutine.)

    The tightest of three limits applies: the call's deadline, the attempt timeout, and
    the first-token limit (a stream's attempt ends at its first content event; a
    generate's, when a limit was set explicitly, at its answer).

    Raises:
        OutOfTime: one of the limits cut the attempt short.
    """
    mode, key, clock, config = call.mode, target.key, call.clock, call.config
    now = clock.now()
    deadline, limit, seconds = call.deadline, "deadline", 0.0
    if config.attempt_timeout is not None and now + config.attempt_timeout < deadline:
        deadline, limit, seconds = now + config.attempt_timeout, "attempt", config.attempt_timeout
    first_token = target.first_token_limit(
        config, call.first_token, mode.streaming, call.asks_reasoning
    )
    if first_token is not None and now + first_token < deadline:
        deadline, limit, seconds = now + first_token, "first_token", first_token
    with clock.deadline_scope(deadline) as scope:
        try:
            # Fitting is inside the bounds: it may download an image.
            request = await call.fitter.fit(key, target.capabilities, streaming=mode.streaming)
            return await mode.run(target.model, request, key)
        except Exception:
            # A provider may turn our cancellation into its own error: still a timeout.
            if not scope.cancel_called:
                raise
    # Reached only when our scope fired and absorbed the attempt's cancellation.
    raise OutOfTime(_timeout(key, limit, seconds), call_deadline=limit == "deadline")


def _timeout(key: str, limit: str, seconds: float) -> ProviderTimeoutError:
    provider, _, model = key.partition("/")
    if limit == "deadline":
        message = "no answer before the call's deadline"
    elif limit == "attempt":
        message = f"no answer within the attempt timeout ({seconds:g} s)"
    else:
        message = f"first token timeout: no content within {seconds:g} s of sending the request"
    return ProviderTimeoutError(message, limit=limit, provider=provider, model=model)
