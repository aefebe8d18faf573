"""A visit's first touch from its landing URL and referrer (docs/collector.md, "Channel rules").

The tracker sends what the browser saw (the landing URL with its UTM
parameters and click ids, and document.referrer); the rules that turn them
into channel/source/medium/campaign/keyword live here, in one place, so every
page and every batch sender gets the same answer and a rule change needs no
new script on the shops' pages. Fields the sender set itself are kept.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from stream.core.tracking import TOUCH_FIELDS

# Ad click ids: a click on a paid ad even without UTM tags.
CLICK_IDS = {
    "gclid": ("paid", "google", "cpc"),
    "gbraid": ("paid", "google", "cpc"),
    "wbraid": ("paid", "google", "cpc"),
    "msclkid": ("paid", "bing", "cpc"),
    "yclid": ("paid", "yandex", "cpc"),
    "fbclid": ("social", "facebook", "social"),
    "ttclid": ("paid", "tiktok", "cpc"),
}
# utm_medium -> channel; an unknown medium is channel "other".
MEDIUM_CHANNELS = {
    **dict.fromkeys(("cpc", "ppc", "paid", "paidsearch", "paid_search", "paid-search"), "paid"),
    **dict.fromkeys(("cpm", "display", "banner"), "display"),
    **dict.fromkeys(("social", "social-network", "social-media", "sm", "paid_social"), "social"),
    **dict.fromkeys(("email", "e-mail", "newsletter"), "email"),
    "affiliate": "affiliate",
    "referral": "referral",
    "organic": "search",
}
# Referrer host (its last two labels, or a known short host) -> (channel, source).
SEARCH_ENGINES = ("google", "bing", "yandex", "duckduckgo", "yahoo", "baidu", "ecosia")
SOCIAL_SITES = {
    "facebook": "facebook",
    "instagram": "instagram",
    "t.co": "twitter",
    "twitter": "twitter",
    "x.com": "twitter",
    "linkedin": "linkedin",
    "vk.com": "vk",
    "tiktok": "tiktok",
    "youtube": "youtube",
    "reddit": "reddit",
    "pinterest": "pinterest",
}
UTM = {
    "utm_source": "source",
    "utm_medium": "medium",
    "utm_campaign": "campaign",
    "utm_term": "keyword",
}
MAX_LABEL = 256  # the event contract's limit of a label


def _first(query: dict[str, list[str]], name: str) -> str:
    values = query.get(name) or [""]
    return values[0].strip()[:MAX_LABEL]


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower().removeprefix("www.")
    except ValueError:
        return ""


def from_referrer(referrer: str, own_host: str) -> dict[str, str]:
    """Channel and source of an untagged visit, from where it came from."""
    host = _host(referrer)
    if not host or host == own_host:
        return {"channel": "direct", "source": "direct", "medium": "none"}
    labels = host.split(".")
    for engine in SEARCH_ENGINES:
        if engine in labels:
            return {"channel": "search", "source": engine, "medium": "organic"}
    for needle, site in SOCIAL_SITES.items():
        if needle in labels or host == needle or host.endswith("." + needle):
            return {"channel": "social", "source": site, "medium": "social"}
    return {"channel": "referral", "source": host[:MAX_LABEL], "medium": "referral"}


def touch_of(url: str, referrer: str = "") -> dict[str, str]:
    """channel, source, medium, campaign, keyword of a landing ``url``: UTM tags
    first, then an ad click id, then the referrer."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return from_referrer(referrer, "")
    query = parse_qs(parts.query)
    touch = {field: value for name, field in UTM.items() if (value := _first(query, name))}
    click = next((CLICK_IDS[name] for name in CLICK_IDS if _first(query, name)), None)
    if click is not None:
        channel, source, medium = click
        touch.setdefault("source", source)
        touch.setdefault("medium", medium)
    if "medium" in touch:
        touch["channel"] = MEDIUM_CHANNELS.get(touch["medium"].lower(), "other")
        if click is not None and touch["channel"] == "other":
            touch["channel"] = click[0]
        return touch
    if "source" in touch:
        return {**touch, "channel": "other"}
    return {**touch, **from_referrer(referrer, (parts.hostname or "").lower().removeprefix("www."))}


def with_touch(event: dict) -> dict:
    """A visit with its touch from its url and referrer, unless the sender gave
    any touch field itself (then its own attribution is kept whole, not mixed)."""
    if event.get("type") != "visit" or not isinstance(event.get("url"), str):
        return event
    if any(event.get(name) is not None for name in TOUCH_FIELDS):
        return event
    referrer = event.get("referrer")
    return {**event, **touch_of(event["url"], referrer if isinstance(referrer, str) else "")}
