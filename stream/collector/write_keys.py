"""Per-source write keys: which event types a sender may write (DESIGN.md section 9).

A shop's page key is public (it sits in the page, as Segment's and PostHog's
do), so it may only write the shop's own event types; a CRM's key writes deals
and calls. The keys file (FUNNEL_COLLECTOR_KEYS) is TOML:

    [[source]]
    name = "shop-web"
    key = "pk_live_..."            # or key_env = "SHOP_WRITE_KEY"
    types = ["visit", "signup", "cart"]
"""

from __future__ import annotations

import hmac
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from stream.config import INPUT_TOPICS

EVENT_TYPES = tuple(INPUT_TOPICS)


class WriteKeysError(ValueError):
    """A keys file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Source:
    name: str
    key: str
    types: frozenset[str]


# Without a keys file (only allowed on a loopback bind): one source, every type.
OPEN = Source("open", "", frozenset(EVENT_TYPES))


def parse_write_keys(text: str, where: str, env: dict[str, str] | None = None) -> list[Source]:
    env = os.environ if env is None else env
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise WriteKeysError(f"{where}: not valid TOML: {exc}") from None
    entries = doc.get("source", [])
    if not isinstance(entries, list) or not entries:
        raise WriteKeysError(f"{where}: needs at least one [[source]] table")
    sources: list[Source] = []
    for i, entry in enumerate(entries, 1):
        sources.append(_source(entry, f"{where}: [[source]] {i}", env))
    names = [s.name for s in sources]
    keys = [s.key for s in sources]
    if len(set(names)) != len(names) or len(set(keys)) != len(keys):
        raise WriteKeysError(f"{where}: two sources share a name or a key")
    return sources


def _source(entry: object, at: str, env: dict[str, str]) -> Source:
    if not isinstance(entry, dict):
        raise WriteKeysError(f"{at}: must be a table")
    unknown = set(entry) - {"name", "key", "key_env", "types"}
    if unknown:
        raise WriteKeysError(f"{at}: unknown field(s) {sorted(unknown)}")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise WriteKeysError(f"{at}: field `name`: a non-empty string is required")
    key = entry.get("key")
    if "key_env" in entry:
        key = env.get(str(entry["key_env"]), "")
        if not key:
            raise WriteKeysError(f"{at} ({name}): field `key_env`: {entry['key_env']} is not set")
    if not isinstance(key, str) or len(key) < 16:
        raise WriteKeysError(f"{at} ({name}): field `key`: at least 16 characters are required")
    types = entry.get("types", [])
    if not isinstance(types, list) or not types or not set(types) <= set(EVENT_TYPES):
        raise WriteKeysError(
            f"{at} ({name}): field `types`: a list of event types from {list(EVENT_TYPES)}"
        )
    return Source(name, key, frozenset(types))


def load_write_keys(path: str) -> list[Source]:
    """The sources of the keys file at ``path``; an empty path means open (no keys)."""
    if not path:
        return []
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise WriteKeysError(f"{path}: cannot read the write keys file: {exc}") from None
    return parse_write_keys(text, path)


def source_of(sources: list[Source], key: str) -> Source | None:
    """The source whose key is ``key`` (constant-time compare), else None.
    With no sources configured everyone is the open source."""
    if not sources:
        return OPEN
    found = None
    for source in sources:
        if hmac.compare_digest(source.key.encode(), key.encode()):
            found = source
    return found


def key_of(authorization: str, query_key: str) -> str:
    """The write key of a request: ``Authorization: Bearer <key>``, else ``?key=``
    (sendBeacon from a page cannot set headers)."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip()
    return query_key
