"""Incremental decoders for streamed bodies: Server-Sent Events and NDJSON.

Pure: no I/O and no aiohttp import. A provider feeds the raw byte chunks it reads
(`resp.content.iter_any()`) and gets back whatever complete events those bytes finish;
`close()` at the end of the body flushes the rest. Lines are split on bytes first and
decoded as strict UTF-8 afterwards, so a multi-byte character split across two chunks
is fine, and no `readline()` is involved, so a line may be as long as `max_line_bytes`
(aiohttp's `readline()` gives up at 128 KiB; providers.md 2.1).

Example:
    >>> decoder = SSEDecoder()
    >>> decoder.feed(b'data: {"a": 1}\\n\\nda')
    [ServerSentEvent(event='message', data='{"a": 1}', id=None, retry=None)]
    >>> decoder.feed(b"ta: [DONE]\\n\\n")
    [ServerSentEvent(event='message', data='[DONE]', id=None, retry=None)]
"""

from __future__ import annotations

import json
from typing import Any, final

from . import _json as fast_json
from ._exceptions import ResponseFormatError

__all__ = ["DEFAULT_MAX_LINE_BYTES", "NDJSONDecoder", "SSEDecoder", "ServerSentEvent"]

DEFAULT_MAX_LINE_BYTES = 8 * 1024 * 1024
"""The longest line (in bytes, line ending excluded) a decoder accepts by default: 8 MiB."""

_CR = 0x0D
_BOM = b"\xef\xbb\xbf"


@final
class ServerSentEvent:
    """One dispatched Server-Sent Event (treat it as immutable).

    A plain slotted class rather than an attrs one: a stream makes one per chunk, and
    this construction costs a third of a frozen attrs instance's.

    Example:
        >>> ServerSentEvent(event="message_stop", data='{"type": "message_stop"}').event
        'message_stop'
    """

    __slots__ = ("data", "event", "id", "retry")

    def __init__(
        self,
        event: str = "message",
        data: str = "",
        id: str | None = None,
        retry: int | None = None,
    ) -> None:
        self.event = event
        """The event type: the last `event:` field of the block, or "message"."""
        self.data = data
        """The `data:` lines of the block joined with "\\n" (no trailing newline)."""
        self.id = id
        """The last event id seen so far in the stream (it persists across events)."""
        self.retry = retry
        """The block's `retry:` field in milliseconds, when it had a valid one."""

    def _fields(self) -> tuple[str, str, str | None, int | None]:
        return (self.event, self.data, self.id, self.retry)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ServerSentEvent):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return (
            f"ServerSentEvent(event={self.event!r}, data={self.data!r}, "
            f"id={self.id!r}, retry={self.retry!r})"
        )


class _LineBuffer:
    """Shared byte-level line splitting: a bounded partial line and strict UTF-8.

    The buffer only ever holds the partial line after the last line ending seen, so
    each byte is scanned for line endings once, in the chunk it arrived in.
    """

    __slots__ = ("_buf", "_cr_ends", "_kind", "_max", "model", "provider")

    def __init__(
        self, *, max_line_bytes: int, provider: str, model: str, kind: str, cr_ends: bool
    ) -> None:
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be at least 1, got {max_line_bytes}")
        self._buf = bytearray()
        self._max = max_line_bytes
        self._kind = kind
        self._cr_ends = cr_ends
        self.provider = provider
        self.model = model

    def _error(self, message: str) -> ResponseFormatError:
        return ResponseFormatError(message, provider=self.provider, model=self.model)

    def _too_long(self) -> ResponseFormatError:
        # The same request would most likely produce the same oversized line: not retryable.
        return ResponseFormatError(
            f"a line in the {self._kind} is longer than the {self._max}-byte limit "
            "(max_line_bytes)",
            provider=self.provider,
            model=self.model,
            should_retry=False,
        )

    def _complete_text(self, chunk: bytes) -> str | None:
        """Take `chunk`; return the decoded text of the lines it completes, if any.

        The text returned ends with a line ending. A trailing partial line stays buffered.
        """
        end = chunk.rfind(b"\n")
        if self._cr_ends and end != len(chunk) - 1:
            end = max(end, chunk.rfind(b"\r"))
        buf = self._buf
        if end < 0:
            # No line ending: the partial line grows. Check it now, so that a line that
            # will never end cannot fill memory before we notice.
            if len(buf) + len(chunk) > self._max:
                raise self._too_long()
            buf += chunk
            return None
        end += 1
        if buf:
            complete: bytes | bytearray = buf + chunk[:end]
            buf.clear()
        else:
            complete = chunk[:end] if end < len(chunk) else chunk
        if end < len(chunk):
            if len(chunk) - end > self._max:
                raise self._too_long()
            buf += chunk[end:]
        # Only a region longer than the cap can hold a line longer than the cap.
        if len(complete) > self._max:
            lines = complete.splitlines() if self._cr_ends else complete.split(b"\n")
            if max(map(len, lines)) > self._max:
                raise self._too_long()
        return self._decode(complete)

    def _take_rest(self) -> str | None:
        """Empty the buffer at end of body: the final unterminated line, decoded."""
        if not self._buf:
            return None
        rest = bytes(self._buf)
        self._buf.clear()
        return self._decode(rest)

    def _decode(self, data: bytes | bytearray) -> str:
        # Line endings are ASCII and never occur inside a UTF-8 multi-byte sequence, so
        # decoding whole lines at once is exactly decoding each line.
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self._error(f"invalid UTF-8 in the {self._kind}: {exc.reason}") from exc


@final
class SSEDecoder(_LineBuffer):
    """Decode a `text/event-stream` body incrementally, per the WHATWG rules.

    Spec: https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation

    - Lines end with CRLF, LF or CR; a CR that ends one chunk and an LF that starts the
      next are one line ending. A UTF-8 BOM at the very start of the stream is skipped.
    - `field:value`, with one leading space of the value dropped; a line with no colon
      is a field name with an empty value; a line starting with ":" is a comment
      (OpenRouter's `: OPENROUTER PROCESSING`, DeepSeek's `: keep-alive`).
    - `data` lines are joined with "\\n"; a blank line dispatches the block if it had
      at least one `data` line. `event` and `retry` belong to their block, so they reset
      at every blank line, dispatched or not. `id` sets the last event id (ignored when
      it contains NUL), which persists until the next `id` field. `retry` counts only
      when it is all ASCII digits. Other fields are ignored.

    Deviation from the spec: at the end of the body `close()` dispatches a block that has
    data but no closing blank line (the spec drops it), because providers and proxies cut
    the last blank line often enough (providers.md 2.1). The provider still checks that
    its terminal event arrived.

    A line that is neither a known field (`data`, `event`, `id`, `retry`) nor a comment
    is ignored, as the rules say. A provider that must read such lines (Gemini writes a
    plain JSON error without `data:`) wraps the decoder with its own (`_GeminiDecoder`).

    Args:
        max_line_bytes: longest line accepted, in bytes, line ending excluded; a longer
            line raises `ResponseFormatError` as soon as the partial line passes the cap.
        provider: provider name, for the errors raised.
        model: model id, for the errors raised.

    Example:
        >>> decoder = SSEDecoder()
        >>> decoder.feed(b"event: ping\\r\\ndata: {}\\r\\n\\r\\n")
        [ServerSentEvent(event='ping', data='{}', id=None, retry=None)]
    """

    __slots__ = ("_bom_done", "_data", "_event", "_id", "_retry", "_skip_lf")

    def __init__(
        self,
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        provider: str = "",
        model: str = "",
    ) -> None:
        super().__init__(
            max_line_bytes=max_line_bytes,
            provider=provider,
            model=model,
            kind="event stream",
            cr_ends=True,
        )
        self._bom_done = False  # True once the first 3 bytes are known not to be (or were) a BOM
        self._skip_lf = False  # the last chunk ended with CR: an LF starting the next is its pair
        self._data: list[str] = []  # data lines of the block being read
        self._event = ""  # event type of the block being read ("" means "message")
        self._id: str | None = None  # the last event id buffer: never reset by a dispatch
        self._retry: int | None = None  # retry of the block being read

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Take the next chunk of the body; return the events it completes, in order.

        Raises:
            ResponseFormatError: the stream is not valid UTF-8, or a line passed
                `max_line_bytes`.
        """
        if not chunk:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if chunk[0] == 0x0A:
                chunk = chunk[1:]
                if not chunk:
                    return []
        if not self._bom_done:
            # The BOM may itself arrive split; hold a prefix of it until we know.
            head = bytes(self._buf) + chunk
            if len(head) < len(_BOM) and _BOM.startswith(head):
                self._buf[:] = head
                return []
            self._buf.clear()
            self._bom_done = True
            chunk = head[len(_BOM) :] if head.startswith(_BOM) else head
        text = self._complete_text(chunk)
        if text is None:
            return []
        self._skip_lf = chunk[-1] == _CR
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        lines.pop()  # the text ends with a line ending: the last piece is empty
        return self._lines(lines)

    def close(self) -> list[ServerSentEvent]:
        """Mark the end of the body: flush the last unterminated line and pending block.

        Returns the events that completes (at most one). The decoder is reset, so it
        could decode another stream afterwards.

        Raises:
            ResponseFormatError: the final line is not valid UTF-8.
        """
        rest = self._take_rest()
        # The "" stands in for the blank line the body did not send.
        lines = [""] if rest is None else [rest, ""]
        try:
            return self._lines(lines)
        finally:
            self._bom_done = False
            self._skip_lf = False
            self._data = []
            self._event = ""
            self._id = None
            self._retry = None

    def _lines(self, lines: list[str]) -> list[ServerSentEvent]:
        events: list[ServerSentEvent] = []
        data = self._data
        for line in lines:
            if not line:
                # A blank line ends the block; it is an event only if it had data.
                if data:
                    text = data[0] if len(data) == 1 else "\n".join(data)
                    events.append(
                        ServerSentEvent(self._event or "message", text, self._id, self._retry)
                    )
                    data = self._data = []
                self._event = ""
                self._retry = None
                continue
            # The hot path first: nearly every line of an LLM stream is `data: {...}`.
            if line.startswith("data:"):
                data.append(line[6:] if line.startswith(" ", 5) else line[5:])
                continue
            if line[0] == ":":
                continue  # a comment: a keep-alive, or a proxy saying it is working
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "event":
                self._event = value
            elif name == "data":
                data.append(value)  # "data" alone, with no colon: an empty data line
            elif name == "id":
                if "\0" not in value:
                    self._id = value
            elif name == "retry" and value.isascii() and value.isdigit():
                self._retry = int(value)
        return events


@final
class NDJSONDecoder(_LineBuffer):
    """Decode a newline-delimited JSON body (`application/x-ndjson`) incrementally.

    One JSON value per line. Lines end with LF or CRLF; blank and whitespace-only lines
    are skipped. Ollama streams this way (providers.md 7.4).

    Args:
        max_line_bytes: longest line accepted, in bytes; a longer line raises
            `ResponseFormatError` as soon as the partial line passes the cap.
        provider: provider name, for the errors raised.
        model: model id, for the errors raised.

    Example:
        >>> decoder = NDJSONDecoder()
        >>> decoder.feed(b'{"done": false}\\n{"done"')
        [{'done': False}]
        >>> decoder.feed(b": true}")
        []
        >>> decoder.close()
        [{'done': True}]
    """

    __slots__ = ()

    def __init__(
        self, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, provider: str = "", model: str = ""
    ) -> None:
        super().__init__(
            max_line_bytes=max_line_bytes,
            provider=provider,
            model=model,
            kind="NDJSON stream",
            cr_ends=False,
        )

    def feed(self, chunk: bytes) -> list[Any]:
        """Take the next chunk of the body; return the JSON values of the lines it completes.

        Raises:
            ResponseFormatError: a line is not valid JSON (the `JSONDecodeError` is the
                cause) or not valid UTF-8, or a line passed `max_line_bytes`.
        """
        if not chunk:
            return []
        text = self._complete_text(chunk)
        if text is None:
            return []
        lines = text.split("\n")
        lines.pop()  # the text ends with "\n": the last piece is empty
        return self._values(lines)

    def close(self) -> list[Any]:
        """Mark the end of the body: decode a final line that had no newline.

        Raises:
            ResponseFormatError: the final line is not valid JSON or UTF-8.
        """
        rest = self._take_rest()
        return [] if rest is None else self._values([rest])

    def _values(self, lines: list[str]) -> list[Any]:
        values: list[Any] = []
        for line in lines:
            if not line or line.isspace():
                continue
            try:
                values.append(fast_json.loads(line))  # a CR left by CRLF is JSON whitespace
            except (ValueError, RecursionError) as exc:  # huge numbers, absurd nesting
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
                raise self._error(
                    f"invalid JSON in the NDJSON stream ({reason}): {line[:200]!r}"
                ) from exc
        return values
