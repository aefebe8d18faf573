"""Installing a replacement method on a Faust class once, keeping the original.

Each fix module replaces one method; ``upstream`` gives back Faust's own
method (patched or not), so its test can show the upstream behaviour.
"""

from __future__ import annotations

from typing import Any


def install(cls: type, name: str, replacement: Any) -> None:
    """Put ``replacement`` in place of ``cls.name`` (idempotent); it keeps the
    original as ``replacement.upstream``."""
    current = getattr(cls, name)
    if getattr(current, "funnel_fixed", False):
        return
    replacement.upstream = current
    replacement.funnel_fixed = True
    setattr(cls, name, replacement)


def upstream(cls: type, name: str) -> Any:
    """Faust's own ``cls.name``, patched or not."""
    current = getattr(cls, name)
    return getattr(current, "upstream", current)
