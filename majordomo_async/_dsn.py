"""DSNs: `scheme://[credential@]host[:port][/base-path][?query]`, parsed and redacted.

Examples: `openai://sk-...@api.openai.com/v1`, `anthropic://sk-ant-...@`,
`ollama://127.0.0.1:11434`, `openai+http://127.0.0.1:8000/v1`, `fake://?script=503+ok`.
The credential is percent-decoded, and never shown by `repr()`, `str()` or an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import final
from urllib.parse import parse_qsl, quote, unquote

import attrs

from ._exceptions import DSNError

__all__ = ["DSN", "canonical_name", "env_var_for", "redact_dsn"]

_SCHEME = re.compile(r"[a-z][a-z0-9+.\-]*\Z")
_REDACTED = "***"
_QUERY_SAFE = "+*:/,."
# C0 controls, DEL and C1 controls: never valid in an HTTP header or a host name.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_NAMES = {"\x00": "NUL", "\t": "TAB", "\n": "LF", "\r": "CR", "\x7f": "DEL"}


def canonical_name(name: str) -> str:
    """A provider name's canonical form: lower case, `_` as `-` (`MY_PROV` -> `my-prov`)."""
    return name.strip().lower().replace("_", "-")


def env_var_for(name: str) -> str:
    """The environment variable that defines provider `name` (`my-prov` -> `LLM_MY_PROV`)."""
    return "LLM_" + canonical_name(name).upper().replace("-", "_")


def redact_dsn(text: str) -> str:
    """`text` with any credential replaced by `***` (safe for messages and logs)."""
    scheme, sep, rest = text.partition("://")
    if not sep or not _SCHEME.match(scheme.lower()):
        # Without a valid scheme nothing tells a key from the rest: a bare `sk-...`, or
        # `key@scheme://`, are likely mistakes, so the text is never shown.
        return _REDACTED
    authority_end = len(rest)
    for stop in "/?#":
        index = rest.find(stop)
        if index != -1:
            authority_end = min(authority_end, index)
    authority, tail = rest[:authority_end], rest[authority_end:]
    at = authority.rfind("@")
    if at == -1:
        # A stray '@' after the authority may still hide a credential someone mistyped.
        return f"{scheme}://{_REDACTED}@{tail.rsplit('@', 1)[1]}" if "@" in tail else text
    return f"{scheme}://{_REDACTED}@{authority[at + 1 :]}{tail}"


@final
@attrs.frozen(repr=False)
class DSN:
    """A parsed provider DSN. Build with `DSN.parse(text)`."""

    scheme: str
    """Lower-cased scheme: picks the provider factory (`openai`, `openai+http`, `fake`)."""
    credential: str | None = None
    """The percent-decoded credential (API key), or None."""
    host: str = ""
    port: int | None = None
    path: str = ""
    """The base path as written (percent-encoded), without a trailing slash ("/v1"); "/"
    for a DSN that names the root explicitly (`http://host:8000/`: a server mounted at
    the root); "" when the DSN has no path (a provider may add its default, `/v1`)."""
    query: Mapping[str, str] = attrs.field(factory=lambda: MappingProxyType({}), hash=False)
    """Query parameters, percent-decoded (the last value of a repeated key wins)."""

    @classmethod
    def parse(cls, text: str) -> DSN:
        """Parse `text`.

        Raises:
            DSNError: the text is not a DSN. The message never contains the credential.
        """
        if not isinstance(text, str):
            raise DSNError(f"a DSN must be a string, not {type(text).__name__}")
        stripped = text.strip()
        scheme, sep, rest = stripped.partition("://")
        if not sep:
            raise DSNError(
                f"not a DSN ({len(stripped)} characters without 'scheme://'; not shown in case "
                "it is a key): expected scheme://[key@]host[:port][/path]"
            )
        # Messages below quote no part of the text but a valid scheme: a key written in the
        # wrong place (no '@', a stray ':' or '/') could be anywhere in it.
        scheme = scheme.lower()
        if not _SCHEME.match(scheme):
            raise DSNError(
                "invalid DSN scheme (not shown): a scheme is a letter followed by letters, "
                "digits, '+', '-' or '.', as in openai:// or openai+http://"
            )
        rest, _, _fragment = rest.partition("#")
        rest, _, query_text = rest.partition("?")
        authority, slash, path = rest.partition("/")
        credential: str | None = None
        at = authority.rfind("@")
        if at != -1:
            credential = unquote(authority[:at]) or None
            authority = authority[at + 1 :]
        elif "@" in path or "@" in query_text:
            raise DSNError(
                f"the {scheme} DSN has an '@' after its host: if that is a credential, "
                "percent-encode the '/', '?' and '#' in it (%2F, %3F, %23)"
            )
        raw_host, port = _split_host_port(authority, scheme)
        host = unquote(raw_host)
        _refuse_control_characters(credential, "credential", scheme)
        _refuse_control_characters(host, "host", scheme)
        if credential is None and _looks_like_a_key(raw_host):
            # `openai://sk-...` without the '@': the key would be taken for a host and
            # end up in URLs and messages. Refuse it, without echoing it.
            raise DSNError(
                f"the host of this {scheme} DSN looks like an API key: write the key "
                f"before an '@' ({scheme}://KEY@host)"
            )
        # A DSN is not an HTML form: '+' stays a plus (spaces are written %20).
        query = dict(parse_qsl(query_text.replace("+", "%2B"), keep_blank_values=True))
        # The path stays percent-encoded: it goes back into URLs as written.
        clean_path = (("/" + path).rstrip("/") or "/") if slash else ""
        return cls(
            scheme=scheme,
            credential=credential,
            host=host,
            port=port,
            path=clean_path,
            query=MappingProxyType(query),
        )

    @property
    def base_url(self) -> str:
        """`http(s)://host[:port]/path` for a `+http`/`+https` scheme; `https` otherwise."""
        transport = "http" if self.scheme.endswith("+http") else "https"
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        return f"{transport}://{host}{port}{self.path}"

    def __repr__(self) -> str:
        return f"DSN({str(self)!r})"

    def __str__(self) -> str:
        credential = f"{_REDACTED}@" if self.credential else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        query = "&".join(
            f"{quote(k, safe=_QUERY_SAFE)}={quote(v, safe=_QUERY_SAFE)}"
            for k, v in self.query.items()
        )
        return f"{self.scheme}://{credential}{host}{port}{self.path}{'?' + query if query else ''}"


def _refuse_control_characters(text: str | None, part: str, scheme: str) -> None:
    """Raise `DSNError` if `text` (the decoded credential or host) has a control character.

    A CR, LF or NUL would otherwise reach an HTTP header or a URL and fail there with a
    bare `ValueError`; a stray newline at the end of a pasted key is the usual cause. The
    message names the character, never the text.
    """
    found = _CONTROL.search(text) if text else None
    if found is None:
        return
    char = found.group()
    name = _CONTROL_NAMES.get(char, f"U+{ord(char):04X}")
    raise DSNError(
        f"the {part} of the {scheme} DSN contains a control character ({name}; the {part} "
        "is not shown): remove it (a newline pasted with a key?)"
    )


def _looks_like_a_key(host: str) -> bool:
    return len(host) >= 24 and "." not in host and ":" not in host


def _split_host_port(authority: str, scheme: str) -> tuple[str, int | None]:
    if authority.startswith("["):
        end = authority.find("]")
        if end == -1:
            raise DSNError(f"unclosed IPv6 bracket in the {scheme} DSN")
        host, rest = authority[1:end], authority[end + 1 :]
        if rest and not rest.startswith(":"):
            raise DSNError(f"unexpected text after IPv6 host in the {scheme} DSN")
        colon, port_text = bool(rest), rest[1:]
    else:
        host, colon_text, port_text = authority.partition(":")
        colon = bool(colon_text)
    if colon and not port_text:
        raise DSNError(f"empty port in the {scheme} DSN")
    if not port_text:
        return host, None
    if (
        len(port_text) > 5  # also keeps int() clear of its 4300-digit limit
        or not port_text.isascii()
        or not port_text.isdigit()
        or not 0 < int(port_text) < 65536
    ):
        raise DSNError(
            f"invalid port in the {scheme} DSN (not shown): expected a number from 1 to 65535; "
            f"a credential goes before an '@' ({scheme}://KEY@host)"
        )
    return host, int(port_text)
