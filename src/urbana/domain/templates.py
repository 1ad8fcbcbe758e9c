"""Message templates and WhatsApp's 24-hour customer-service window.

Outside the 24 hours after the lead's last message, Meta's Cloud API accepts only
templates the business had approved beforehand. A tenant registers its approved
templates here (name, language, the names of the body's parameters `{{1}}`, `{{2}}`
..., and the body's text for the transcript); an attendant sends one with values for
its parameters. Evolution API and Z-API drive a WhatsApp app and have no templates: on
those channels the window is the tenant's choice (`window_exempt_channels`), on the
Cloud API it always applies. See docs/architecture.md, Templates and the window.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from urbana.domain.errors import InvalidInput

# Meta's template names: lowercase letters, digits and underscores, at most 512.
_NAME = re.compile(r"[a-z0-9_]{1,512}")
# Meta's language codes: "pt_BR", "en_US", "es", "pt".
_LANGUAGE = re.compile(r"[a-z]{2,3}(_[A-Z]{2})?")
_PLACEHOLDER = re.compile(r"\{\{(\d+)\}\}")
MAX_PARAMETERS = 20
MAX_VALUE = 1_024  # Meta refuses longer body parameters
WINDOW_CHANNELS = frozenset({"cloud"})  # where the window always applies
EXEMPTIBLE_CHANNELS = frozenset({"evolution", "zapi"})


@dataclass(frozen=True, slots=True)
class Template:
    """An approved template: `text` holds `{{1}}`..`{{n}}`, one per name in `parameters`."""

    name: str
    language: str
    parameters: tuple[str, ...]
    text: str

    @classmethod
    def of(cls, name: str, language: str, parameters: Sequence[str], text: str) -> Template:
        """A template checked against Meta's rules; InvalidInput says what is wrong."""
        if not _NAME.fullmatch(name):
            raise InvalidInput("a template name is lowercase letters, digits and underscores")
        if not _LANGUAGE.fullmatch(language):
            raise InvalidInput(f"{language!r} is not a language code like pt_BR")
        names = tuple(p.strip() for p in parameters)
        if len(names) > MAX_PARAMETERS or any(not p for p in names) or len(set(names)) < len(names):
            raise InvalidInput(f"parameters are up to {MAX_PARAMETERS} distinct names")
        if not text.strip():
            raise InvalidInput("the template's text is required")
        numbers = sorted({int(n) for n in _PLACEHOLDER.findall(text)})
        if numbers != list(range(1, len(names) + 1)):
            raise InvalidInput(
                f"the text must use {{{{1}}}}..{{{{{len(names)}}}}}, one per parameter"
                if names
                else "a template without parameters has no {{n}} in its text"
            )
        return cls(name=name, language=language, parameters=names, text=text.strip())

    def fill(self, values: Mapping[str, str]) -> tuple[list[str], str]:
        """The values in parameter order and the text they make; InvalidInput if they
        do not match the parameters."""
        unknown = set(values) - set(self.parameters)
        missing = [p for p in self.parameters if not str(values.get(p, "")).strip()]
        if unknown or missing:
            raise InvalidInput(
                f"template {self.name} takes {list(self.parameters)}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {sorted(unknown)}" if unknown else "")
            )
        ordered = [str(values[p]).strip() for p in self.parameters]
        if any(len(v) > MAX_VALUE for v in ordered):
            raise InvalidInput(f"a template value is at most {MAX_VALUE} characters")
        text = _PLACEHOLDER.sub(lambda m: ordered[int(m.group(1)) - 1], self.text)
        return ordered, text


def window_applies(channel: str, exempt_channels: Sequence[str]) -> bool:
    """Whether free-form messages on `channel` need the 24-hour window."""
    return channel in WINDOW_CHANNELS or channel not in exempt_channels


def exempt_channels(value: object) -> tuple[str, ...]:
    """The tenant setting: channels (Evolution API, Z-API) where the window is not applied."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ValueError("a list of channels")
    channels = tuple(sorted({str(v) for v in value}))
    refused = set(channels) - EXEMPTIBLE_CHANNELS
    if refused:
        raise ValueError(
            f"the window can be lifted only on {sorted(EXEMPTIBLE_CHANNELS)}, not {sorted(refused)}"
        )
    return channels
