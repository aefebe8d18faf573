"""The webhook mapping file (FUNNEL_WEBHOOKS): which sources exist, how each is
verified and how its stage ids become the funnel's stages.

Errors name the file, the source and the field, as the funnel file's do. A
secret is read from the environment variable ``secret_env`` names, never kept in
the file; a source whose variable is unset answers 401 naming it.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

DEFAULT_WEBHOOKS = "webhooks.toml"
VENDORS = ("pipedrive", "hubspot", "amocrm", "telephony")
CLOSING = ("won", "lost")  # stage targets that close the deal instead of naming a stage
# The telephony payload's field names, as the generic call webhook documents them.
CALL_FIELDS = {
    "call_id": "call_id",
    "tracking_number": "to",
    "caller": "from",
    "occurred_at": "started_at",
    "duration_s": "duration",
    "answered": "answered",
    "direction": "direction",
    "deal_id": "deal_id",
}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_KNOWN = {
    "vendor",
    "secret_env",
    "user",
    "url",
    "pipeline",
    "stages",
    "managers",
    "fields",
    "signature_header",
}


class WebhookConfigError(ValueError):
    """A mapping file that cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Hook:
    name: str
    vendor: str
    secret_env: str
    secret: str = field(default="", repr=False)
    user: str = ""  # Pipedrive: the webhook's HTTP Basic user (the secret is its password)
    url: str = ""  # HubSpot: the public URL it calls (signed); empty = as the request arrived
    pipeline: str = "sales"
    stages: dict[str, str] = field(default_factory=dict)
    managers: dict[str, str] = field(default_factory=dict)
    fields: dict[str, str] = field(default_factory=dict)
    signature_header: str = "X-Signature"


def _strings(value: object, at: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
        raise WebhookConfigError(f"{at}: must be a table of non-empty strings")
    return {str(k): v for k, v in value.items()}


def _hook(name: str, raw: object, where: str, env: dict[str, str]) -> Hook:
    at = f"{where}: [webhooks.{name}]"
    if not _NAME.match(name):
        raise WebhookConfigError(f"{at}: a source name is lower case letters, digits, - and _")
    if not isinstance(raw, dict):
        raise WebhookConfigError(f"{at}: must be a table")
    unknown = set(raw) - _KNOWN
    if unknown:
        raise WebhookConfigError(f"{at}: unknown field(s) {sorted(unknown)}")
    vendor = raw.get("vendor")
    if vendor not in VENDORS:
        raise WebhookConfigError(f"{at} field `vendor`: {vendor!r} is not one of {VENDORS}")
    secret_env = raw.get("secret_env")
    if not isinstance(secret_env, str) or not secret_env:
        raise WebhookConfigError(f"{at} field `secret_env`: the variable holding the secret")
    stages = _strings(raw.get("stages", {}), f"{at} field `stages`")
    if vendor != "telephony" and not stages:
        raise WebhookConfigError(f"{at} field `stages`: map the CRM's stages to the funnel's")
    fields = {**CALL_FIELDS, **_strings(raw.get("fields", {}), f"{at} field `fields`")}
    if unknown_fields := set(fields) - set(CALL_FIELDS):
        raise WebhookConfigError(f"{at} field `fields`: unknown call field(s) {unknown_fields}")
    return Hook(
        name=name,
        vendor=vendor,
        secret_env=secret_env,
        secret=env.get(secret_env, ""),
        user=str(raw.get("user", "")),
        url=str(raw.get("url", "")),
        pipeline=str(raw.get("pipeline", "sales")),
        stages=stages,
        managers=_strings(raw.get("managers", {}), f"{at} field `managers`"),
        fields=fields,
        signature_header=str(raw.get("signature_header", "X-Signature")),
    )


def parse_webhooks(
    text: str, where: str, stages: list[str], env: dict[str, str] | None = None
) -> dict[str, Hook]:
    """``stages``: every stage the funnels know; a mapping to another is an error."""
    env = os.environ if env is None else env
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise WebhookConfigError(f"{where}: not valid TOML: {exc}") from None
    tables = doc.get("webhooks", {})
    if not isinstance(tables, dict):
        raise WebhookConfigError(f"{where}: [webhooks] must be a table of sources")
    hooks = {name: _hook(name, raw, where, env) for name, raw in tables.items()}
    for hook in hooks.values():
        for vendor_stage, target in hook.stages.items():
            if target not in stages and target not in CLOSING:
                raise WebhookConfigError(
                    f"{where}: [webhooks.{hook.name}] field `stages`: {vendor_stage!r} -> "
                    f"{target!r} is not a stage of the funnels ({', '.join(stages)}) nor won/lost"
                )
    return hooks


def load_webhooks(path: str, stages: list[str]) -> dict[str, Hook]:
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise WebhookConfigError(f"{path}: cannot read the webhook mapping: {exc}") from None
        return parse_webhooks(text, path, stages)
    text = resources.files("stream.collector").joinpath(DEFAULT_WEBHOOKS).read_text()
    return parse_webhooks(text, f"stream/collector/{DEFAULT_WEBHOOKS}", stages)
