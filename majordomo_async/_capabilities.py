"""What a target accepts."""

from __future__ import annotations

import attrs

__all__ = ["Capabilities"]

_COMMON_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})


@attrs.frozen
class Capabilities:
    """What a target can take. Chains report their head's; each attempt uses its own target's.

    The defaults describe a modern multimodal chat model.
    """

    streaming: bool = True
    system_prompt: bool = True
    tools: bool = True
    json_mode: bool = True
    vision: bool = True
    """Accepts image parts at all."""
    image_urls: bool = True
    """Accepts images by URL; when False, images must be sent inline."""
    image_mime_types: frozenset[str] = attrs.field(default=_COMMON_IMAGE_TYPES, converter=frozenset)
    max_image_bytes: int | None = 20 * 1024 * 1024
    """Largest inline image, in bytes (None: no known limit)."""
    context_window: int | None = None
    """Tokens of context, when known."""
