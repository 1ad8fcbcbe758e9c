"""Reading untrusted gateway JSON: the small checks every adapter shares."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import orjson

from urbana.errors import Rejected

_MAX_EPOCH_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second datetime holds
# WhatsApp's click-to-WhatsApp ad fields as the WhatsApp Web gateways spell them
# (`externalAdReply`) -> the referral keys Meta's Cloud API uses.
AD_REPLY_KEYS = {
    "sourceUrl": "source_url",
    "sourceId": "source_id",
    "sourceType": "source_type",
    "title": "headline",
    "body": "body",
    "ctwaClid": "ctwa_clid",
    "thumbnailUrl": "thumbnail_url",
}


def decode_json(body: bytes) -> object:
    """The parsed body; malformed JSON is the client's fault (400)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Rejected(400, f"body is not valid JSON: {exc}") from exc


def text(value: object) -> str | None:
    """A non-empty string, or None for anything else."""
    return value if isinstance(value, str) and value else None


def finite_number(value: object) -> float | None:
    """A JSON number that is finite (booleans are not numbers here), or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


Json = dict[str, object]


def json_object(value: object, where: str) -> Json:
    """`value` as a JSON object; anything else is the client's fault (422)."""
    if not isinstance(value, dict):
        raise Rejected(422, f"{where} must be a JSON object")
    return value


def json_list(value: object) -> list[object]:
    """`value` when it is a JSON array, else an empty list (for optional, lenient fields)."""
    return value if isinstance(value, list) else []


def required_str(obj: Json, key: str, where: str | None = None) -> str:
    """`obj[key]` as a non-empty string; absent or empty is the client's fault (422)."""
    value = text(obj.get(key))
    if value is None:
        name = f"{where}.{key}" if where else key
        raise Rejected(422, f"{name} must be a non-empty string")
    return value


def location(
    part: Json,
    extra: Json,
    *,
    coordinates: tuple[str, str] = ("latitude", "longitude"),
    number: Callable[[object], float | None] = finite_number,
    link: bool = True,
) -> str | None:
    """A shared location's text, "name, address" (None without either).

    Its latitude and longitude (read from the `coordinates` keys with `number`), name,
    address and, with `link`, its `url` go to `extra`.
    """
    for source, target in zip(coordinates, ("latitude", "longitude"), strict=True):
        if (coordinate := number(part.get(source))) is not None:
            extra[target] = coordinate
    labels = []
    for key in ("name", "address"):
        if (label := text(part.get(key))) is not None:
            extra[key] = label
            labels.append(label)
    if link and (url := text(part.get("url"))) is not None:
        extra["url"] = url
    return ", ".join(labels) or None


def epoch_seconds(value: object, where: str) -> datetime:
    """Epoch seconds, a JSON integer or a string of digits, as a UTC datetime; else 422."""
    seconds: int | None = None
    if isinstance(value, str) and 0 < len(value) <= 12 and value.isascii() and value.isdigit():
        seconds = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    if seconds is None or not 0 <= seconds <= _MAX_EPOCH_SECONDS:
        raise Rejected(422, f"{where} must be epoch seconds")
    return datetime.fromtimestamp(seconds, tz=UTC)


def media(
    part: Json, extra: Json, *, url: str, mime: str
) -> tuple[str | None, str | None, str | None]:
    """A WhatsApp Web media message's caption, link and MIME type (read from the `url` and
    `mime` keys); its file name and voice-note flag go to `extra`."""
    if (file_name := text(part.get("fileName"))) is not None:
        extra["filename"] = file_name
    if part.get("ptt") is True:
        extra["voice"] = True
    return text(part.get("caption")), text(part.get(url)), text(part.get(mime))


def referral(ad: object, keys: Mapping[str, str]) -> Mapping[str, str] | None:
    """A click-to-WhatsApp ad's details: its non-empty strings, renamed by `keys`
    (the gateway's name -> ours); None when there is no ad or nothing in it."""
    if not isinstance(ad, dict):
        return None
    found = {
        target: value
        for source, target in keys.items()
        if isinstance(value := ad.get(source), str) and value
    }
    return found or None
