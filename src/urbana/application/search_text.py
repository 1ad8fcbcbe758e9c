"""What of a lead's burst the knowledge base is searched with.

Leads ask the same question in many ways: "oi boa tarde, vcs abrem sabado??", "Vcs abrem
sabado", "bom diaa vcs abrem sabado pfv". The greeting, the politeness, the case and
the punctuation say nothing about which passage answers it, yet each spelling was
embedded on its own, and each embedding is most of the responder's CPU for a burst
(docs/architecture.md, The flow of one message, step 5). `search_text` keeps what was
asked: the same question written these ways gives one text, so it is embedded once
and found again in the query-vector cache. The LLM still reads the burst as written.
"""

from __future__ import annotations

import re

# Opening greetings, as leads write them (repeated letters included: "oii", "bom diaa").
_GREETING = re.compile(
    r"^(?:(?:oi+e?|ol+[aá]+|al+[oô]+|opa+|e a+[ií]+|ea+[ií]+|ei+|hey|hello|salve"
    r"|bo+m dia+|boa tarde+|boa noite+|tudo bem|tudo bom|td bem|td bom)\s+)+"
)
# Closing politeness.
_POLITENESS = re.compile(r"(?:\s+(?:por favor|pfv+|pf|pls|obrigad[oa]|obg|grat[oa]))+$")
# Punctuation between words (letters, digits, spaces and the signs of amounts stay).
_NOT_A_WORD = re.compile(r"[^\w\s$%]+|_+")
# A letter held down: three or more of it ("oiii", "simmm") read as one.
_HELD = re.compile(r"([^\W\d_])\1{2,}")
_SPACES = re.compile(r"\s+")


def search_text(burst: str) -> str:
    """The burst as a search query: lower case, no punctuation, no opening greeting or
    closing politeness, single spaces. A burst that is only a greeting stays as it is
    (lower case, no punctuation): it is still what the lead asked."""
    text = _NOT_A_WORD.sub(" ", burst.casefold())
    text = _SPACES.sub(" ", _HELD.sub(r"\1", text)).strip()
    asked = _POLITENESS.sub("", _GREETING.sub("", text + " ").strip())
    return asked or text
