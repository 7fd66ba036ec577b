"""majordomo_async: an asyncio-native client for LLM APIs with health-tracked failover.

```python
from majordomo_async import Registry

async with Registry() as registry:
    model = registry.parse("openai/gpt-4o,anthropic/claude-sonnet-4-5")
    response = await model.generate("Hello")
    print(response.model, response.text)
```

Everything importable from this module is public; every other module is private.
"""

import importlib
import typing

from ._asgi import ClientDisconnectedError as ClientDisconnectedError
from ._asgi import cancel_on_disconnect as cancel_on_disconnect
from ._capabilities import Capabilities as Capabilities
from ._chain import Chain as Chain
from ._chain import ChainConfig as ChainConfig
from ._chain import Target as Target
from ._clock import Clock as Clock
from ._clock import ManualClock as ManualClock
from ._clock import MonotonicClock as MonotonicClock
from ._context import HTTPSessionHolder as HTTPSessionHolder
from ._context import ProviderContext as ProviderContext
from ._context import SchemeFactory as SchemeFactory
from ._dsn import DSN as DSN
from ._events import ReasoningDelta as ReasoningDelta
from ._events import StreamEnd as StreamEnd
from ._events import StreamEvent as StreamEvent
from ._events import StreamRestart as StreamRestart
from ._events import StreamStart as StreamStart
from ._events import TextDelta as TextDelta
from ._events import ToolCallDelta as ToolCallDelta
from ._events import UsageUpdate as UsageUpdate
from ._exceptions import AliasCycleError as AliasCycleError
from ._exceptions import AuthenticationError as AuthenticationError
from ._exceptions import BadRequestError as BadRequestError
from ._exceptions import ChainExhaustedError as ChainExhaustedError
from ._exceptions import ConfigurationError as ConfigurationError
from ._exceptions import ContentPolicyError as ContentPolicyError
from ._exceptions import ContextLengthError as ContextLengthError
from ._exceptions import DSNError as DSNError
from ._exceptions import ErrorClass as ErrorClass
from ._exceptions import ImageDownloadError as ImageDownloadError
from ._exceptions import MajordomoError as MajordomoError
from ._exceptions import ModelNotFoundError as ModelNotFoundError
from ._exceptions import ModelProtocolError as ModelProtocolError
from ._exceptions import OverloadedError as OverloadedError
from ._exceptions import ProviderConnectionError as ProviderConnectionError
from ._exceptions import ProviderError as ProviderError
from ._exceptions import ProviderStatusError as ProviderStatusError
from ._exceptions import ProviderTimeoutError as ProviderTimeoutError
from ._exceptions import QuotaExceededError as QuotaExceededError
from ._exceptions import RateLimitError as RateLimitError
from ._exceptions import ResponseFormatError as ResponseFormatError
from ._exceptions import ServerError as ServerError
from ._exceptions import SpecError as SpecError
from ._exceptions import StreamClosedError as StreamClosedError
from ._exceptions import StreamConsumedError as StreamConsumedError
from ._exceptions import StreamError as StreamError
from ._exceptions import StreamNotFinishedError as StreamNotFinishedError
from ._exceptions import StreamTruncatedError as StreamTruncatedError
from ._exceptions import TargetFailure as TargetFailure
from ._exceptions import TargetSkippedError as TargetSkippedError
from ._exceptions import UnknownProviderError as UnknownProviderError
from ._exceptions import UnsupportedRequestError as UnsupportedRequestError
from ._exceptions import classify as classify
from ._health import Admission as Admission
from ._health import Bench as Bench
from ._health import HealthConfig as HealthConfig
from ._health import HealthStore as HealthStore
from ._health import HealthTracker as HealthTracker
from ._health import InMemoryHealthStore as InMemoryHealthStore
from ._health import TargetHealth as TargetHealth
from ._hooks import CallInfo as CallInfo
from ._hooks import Hooks as Hooks
from ._http import HOSTED_TIMEOUTS as HOSTED_TIMEOUTS
from ._http import ON_DEMAND_TIMEOUTS as ON_DEMAND_TIMEOUTS
from ._http import SELF_HOSTED_TIMEOUTS as SELF_HOSTED_TIMEOUTS
from ._http import Timeouts as Timeouts
from ._limits import Limits as Limits
from ._messages import ImagePart as ImagePart
from ._messages import Message as Message
from ._messages import Part as Part
from ._messages import ReasoningPart as ReasoningPart
from ._messages import TextPart as TextPart
from ._messages import Tool as Tool
from ._messages import ToolCall as ToolCall
from ._messages import ToolCallPart as ToolCallPart
from ._messages import ToolResultPart as ToolResultPart
from ._protocols import AsyncModel as AsyncModel
from ._protocols import ModelLister as ModelLister
from ._protocols import Provider as Provider
from ._provider_options import ProviderOptions as ProviderOptions
from ._reasoning import Reasoning as Reasoning
from ._registry import Registry as Registry
from ._request import JSONMode as JSONMode
from ._request import JSONSchema as JSONSchema
from ._request import Option as Option
from ._request import Request as Request
from ._request import as_request as as_request
from ._request import cache as cache
from ._request import first_token_timeout as first_token_timeout
from ._request import json_mode as json_mode
from ._request import json_schema as json_schema
from ._request import max_tokens as max_tokens
from ._request import metadata as metadata
from ._request import provider_options as provider_options
from ._request import reasoning as reasoning
from ._request import stop as stop
from ._request import system as system
from ._request import temperature as temperature
from ._request import timeout as timeout
from ._request import tool_choice as tool_choice
from ._request import tools as tools
from ._request import top_p as top_p
from ._response import FinishReason as FinishReason
from ._response import Response as Response
from ._response import Usage as Usage
from ._stream import Stream as Stream
from ._version import __version__ as __version__

if typing.TYPE_CHECKING:
    from ._otel import OpenTelemetryHooks as OpenTelemetryHooks
    from ._redis_store import RedisHealthStore as RedisHealthStore
    from ._redis_store import RedisStoreEvent as RedisStoreEvent

__all__ = (
    "Admission",
    "AliasCycleError",
    "AsyncModel",
    "AuthenticationError",
    "BadRequestError",
    "Bench",
    "CallInfo",
    "Capabilities",
    "Chain",
    "ChainConfig",
    "ChainExhaustedError",
    "ClientDisconnectedError",
    "Clock",
    "ConfigurationError",
    "ContentPolicyError",
    "ContextLengthError",
    "DSN",
    "DSNError",
    "ErrorClass",
    "FinishReason",
    "HOSTED_TIMEOUTS",
    "HTTPSessionHolder",
    "HealthConfig",
    "HealthStore",
    "HealthTracker",
    "Hooks",
    "ImageDownloadError",
    "ImagePart",
    "InMemoryHealthStore",
    "JSONMode",
    "JSONSchema",
    "Limits",
    "MajordomoError",
    "ManualClock",
    "Message",
    "ModelLister",
    "ModelNotFoundError",
    "ModelProtocolError",
    "MonotonicClock",
    "ON_DEMAND_TIMEOUTS",
    "OpenTelemetryHooks",
    "Option",
    "OverloadedError",
    "Part",
    "Provider",
    "ProviderConnectionError",
    "ProviderContext",
    "ProviderError",
    "ProviderOptions",
    "ProviderStatusError",
    "ProviderTimeoutError",
    "QuotaExceededError",
    "RateLimitError",
    "Reasoning",
    "ReasoningDelta",
    "ReasoningPart",
    "RedisHealthStore",
    "RedisStoreEvent",
    "Registry",
    "Request",
    "Response",
    "ResponseFormatError",
    "SELF_HOSTED_TIMEOUTS",
    "SchemeFactory",
    "ServerError",
    "SpecError",
    "Stream",
    "StreamClosedError",
    "StreamConsumedError",
    "StreamEnd",
    "StreamError",
    "StreamEvent",
    "StreamNotFinishedError",
    "StreamRestart",
    "StreamStart",
    "StreamTruncatedError",
    "Target",
    "TargetFailure",
    "TargetHealth",
    "TargetSkippedError",
    "TextDelta",
    "TextPart",
    "Timeouts",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallPart",
    "ToolResultPart",
    "UnknownProviderError",
    "UnsupportedRequestError",
    "Usage",
    "UsageUpdate",
    "__version__",
    "as_request",
    "cache",
    "cancel_on_disconnect",
    "classify",
    "first_token_timeout",
    "json_mode",
    "json_schema",
    "max_tokens",
    "metadata",
    "provider_options",
    "reasoning",
    "stop",
    "system",
    "temperature",
    "timeout",
    "tool_choice",
    "tools",
    "top_p",
)

_ON_FIRST_USE: dict[str, str] = {
    "OpenTelemetryHooks": "._otel",
    "RedisHealthStore": "._redis_store",
    "RedisStoreEvent": "._redis_store",
}
"""Public names whose modules load when the name is first read: few programs use them,
and they would add about 10 ms to every `import majordomo_async`."""


def _public(obj: object) -> None:
    """Tracebacks and reprs say `majordomo_async.RateLimitError`, not the private module."""
    if isinstance(obj, type) and obj.__module__.startswith("majordomo_async."):
        obj.__module__ = "majordomo_async"


def __getattr__(name: str) -> object:
    module = _ON_FIRST_USE.get(name)
    if module is None:
        raise AttributeError(f"module 'majordomo_async' has no attribute {name!r}")
    obj = getattr(importlib.import_module(module, __name__), name)
    _public(obj)
    globals()[name] = obj  # later reads skip this function
    return obj


def __dir__() -> list[str]:
    return sorted({*globals(), *_ON_FIRST_USE})


for _name in __all__:
    if _name not in _ON_FIRST_USE:
        _public(globals()[_name])
del _name
