"""Guardrails around the LLM: what may go in, what may go out.

See docs/architecture.md, The flow of one message (the AI responder's step).

The input guard refuses bursts that try to rewrite the assistant's instructions
(prompt injection, in Portuguese and English), smuggle encoded payloads, or are too
long. The output guard refuses replies that leak the system prompt, wander off the
knowledge base with low confidence, promise prices, discounts or deadlines the
retrieved passages do not state, or are too long. Both return a `Verdict` with a
stable reason code; the caller records `AIReplyRejected` and hands off.

Everything here is heuristic and pure: matching happens on folded text (lowercase,
no accents, no zero-width characters), so "Ignore as INSTRUÇÕES" and "ignore as
instrucoes" are the same attack.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MAX_INPUT = 2000  # characters in one burst
MAX_OUTPUT = 1000  # characters in one reply (a WhatsApp message people still read)
LEAK_NGRAM = 8  # words in a row shared with the system prompt that count as a leak
MIN_CONFIDENCE = 0.5  # below it, a reply with nothing in common with the passages is off-topic

# Reason codes.
INPUT_TOO_LONG = "input_too_long"
PROMPT_INJECTION = "prompt_injection"
ENCODED_PAYLOAD = "encoded_payload"
EMPTY_REPLY = "empty_reply"
REPLY_TOO_LONG = "reply_too_long"
PROMPT_LEAK = "prompt_leak"
OFF_TOPIC = "off_topic"
UNSUPPORTED_PRICE = "unsupported_price"
UNSUPPORTED_DISCOUNT = "unsupported_discount"
UNSUPPORTED_DEADLINE = "unsupported_deadline"


@dataclass(frozen=True, slots=True)
class Verdict:
    """A guard's answer: `ok`, or a reason code and what triggered it."""

    ok: bool
    reason: str | None = None
    detail: str = ""


PASS = Verdict(ok=True)


def _reject(reason: str, detail: str) -> Verdict:
    return Verdict(ok=False, reason=reason, detail=detail[:200])


# ------------------------------------------------------------------- text helpers

_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_SPACES = re.compile(r"\s+")
_WORD = re.compile(r"[a-z0-9]+")

_STOPWORDS = """
    a o as os um uma uns umas de da do das dos em na no nas nos por para pra pro com sem
    e ou mas que se ja nao sim eu voce vc voces nos ele ela eles elas me te lhe seu sua
    seus suas meu minha meus minhas nosso nossa isso isto esse essa este esta aquele aquela
    ao aos qual quais quanto quanta quantos quantas como quando onde porque pois tem ter
    ser sao foi era estou esta estao vai vou pode posso ha mais menos muito muita bem
    tambem so ainda entao aqui ali la tudo todo toda todos todas oi ola obrigado obrigada
    the an of to in on for with is are be do does you your we our it this that what how
"""
STOPWORDS = frozenset(_STOPWORDS.split())


def fold(text: str) -> str:
    """Lowercase, accents and invisible characters removed, whitespace collapsed."""
    text = _INVISIBLE.sub("", text)
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _SPACES.sub(" ", stripped.casefold()).strip()


def words(text: str) -> list[str]:
    """The folded words of `text`, in order."""
    return _WORD.findall(fold(text))


def stem(word: str) -> str:
    """A crude Portuguese stem: no plural 's', at most six letters ("lojas" ~ "loja")."""
    if len(word) > 3 and word.endswith("s"):
        word = word[:-1]
    return word[:6]


def content_words(text: str) -> set[str]:
    """Stems of the words that carry meaning (no stopwords, no one- or two-letter words)."""
    return {stem(w) for w in words(text) if len(w) > 2 and w not in STOPWORDS}


# -------------------------------------------------------------------- input guard

_INJECTION = [
    re.compile(p, re.MULTILINE)
    for p in (
        # Portuguese: overriding or revealing the instructions.
        r"\b(ignor[ea]\w*|desconsider[ea]\w*|esquec[ae]\w*|despreze\w*|anule|descarte)\b"
        r"[^.!?\n]{0,40}\b(instruc\w*|regras?|ordens|orientac\w*|diretrizes|comandos"
        r"|prompt|restric\w*|programac\w*)",
        r"\b(ignore|esqueca|desconsidere) tudo (acima|anterior|o que (te|lhe) (disseram|falaram"
        r"|ensinaram|mandaram))",
        r"\b(voce|vc|tu) agora (e|eh|sera|vai ser|passa a ser)\b",
        r"\b(a partir de agora|de agora em diante)\b[^.!?\n]{0,25}\b(voce|vc|tu|responda|aja"
        r"|finja|fale|seu nome)\b",
        r"\b(finja|finge|fingir|fingindo)\b",
        r"\bfaca de conta\b",
        r"\b(interprete|assuma|incorpore|encarne|vista)\b[^.!?\n]{0,12}\b(papel|personagem"
        r"|persona)\b",
        r"\b(prompt|instruc\w*|mensagem|configurac\w*|regras) (do|de) sistema\b",
        r"\bprompt (inicial|original|oculto|secreto|interno)\b",
        r"\b(suas|tuas|as) (instrucoes|regras|diretrizes) (iniciais|originais|internas"
        r"|ocultas|secretas)\b",
        r"\b(mostre|mostra|revele|revela|repita|repete|imprima|exiba|liste|copie|escreva"
        r"|(me )?(de|da|passe|passa|mande|manda|fale|fala|conte|conta|diga|diz))\b"
        r"[^.!?\n]{0,30}\b(seu prompt|o prompt|suas instruc\w*|as instruc\w*|suas regras"
        r"|regras internas|configurac\w* interna)",
        r"\bmodo (desenvolvedor|dev|developer|deus|god|sem restric\w*|irrestrito|sem filtro\w*"
        r"|jailbreak|admin\w*|debug|depuracao)\b",
        r"\bsem (filtros?|censura|limites eticos|restricoes eticas)\b",
        r"\bnovas instrucoes\b|\binstrucoes (atualizadas|novas)\b",
        # English.
        r"\b(ignore|disregard|forget|override|bypass)\b[^.!?\n]{0,40}\b(instructions?|prompts?"
        r"|rules|directions|guidelines|directives|guardrails|constraints|programming|above)\b",
        r"\byou are now\b|\bfrom now on,? you\b|\bact as (a|an|if|my)\b",
        r"\bpretend (to be|you are|you're|that)\b|\brole ?-?play\b",
        r"\bdo anything now\b|\bdeveloper mode\b|\bjailbr(eak|oken)\w*\b|\bunfiltered\b",
        r"\bno (restrictions|filters|limits|rules)\b",
        r"\bsystem ?prompt\b|\binitial prompt\b|\bhidden (rules|instructions|prompt)\b",
        r"\b(reveal|show|print|repeat|output|tell me|display|leak|dump|give me)\b"
        r"[^.!?\n]{0,30}\b(your (instructions|prompt|rules)|the (instructions|prompt))",
        # Chat-template markup and role labels smuggled into the text.
        r"<\|?\s*(im_start|im_end|system|endoftext|assistant)\s*\|?>|<<\s*sys\s*>>",
        r"\[/?\s*(inst|system|sys|sistema)\s*\]",
        r"^\s*#*\s*(system|assistant|sistema|developer)\s*:",
        r"###\s*(system|instruction|sistema|instruc)",
        # Asking to decode something is how encoded payloads are delivered.
        r"\bbase ?64\b|\b(decodifique|decode|decifre)\b",
    )
]
_URL = re.compile(r"https?://\S+|www\.\S+", re.IGNORECASE)
_BLOB = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")


def check_input(text: str, *, max_chars: int = MAX_INPUT) -> Verdict:
    """May this burst go to the LLM? Refuses injection attempts, encoded blobs, size."""
    if len(text) > max_chars:
        return _reject(INPUT_TOO_LONG, f"{len(text)} > {max_chars} characters")
    folded = "\n".join(fold(line) for line in text.splitlines())
    for pattern in _INJECTION:
        match = pattern.search(folded)
        if match:
            return _reject(PROMPT_INJECTION, match.group(0))
    for blob in _BLOB.finditer(_URL.sub(" ", text)):
        chunk = blob.group(0)
        if (
            any(c.isupper() for c in chunk)
            and any(c.islower() for c in chunk)
            and any(c.isdigit() for c in chunk)
        ):
            return _reject(ENCODED_PAYLOAD, chunk[:40])
    return PASS


# ------------------------------------------------------------------- output guard

_META_LEAK = re.compile(
    r"\b(minhas|as minhas) (instrucoes|regras|diretrizes)\b|\bprompt (do|de) sistema\b"
    r"|\bsystem ?prompt\b|\bfui (instruid|programad|configurad)\w*\b"
    r"|\bmy (instructions|system prompt|rules) (are|say)\b"
)

_NUMBER = r"(\d{1,3}(?:\.\d{3})+|\d+)(?:,(\d{1,2}))?"
_PRICE = re.compile(rf"r\$\s*{_NUMBER}|\b{_NUMBER}\s*(?:reais|real)\b")
_PERCENT = re.compile(r"(\d+(?:[.,]\d+)?)\s*(?:%|por cento\b|percent\b)")
_DISCOUNT_TERMS = {
    "desconto": r"descont\w*",
    "promocao": r"promoc\w*|promo\b",
    "cupom": r"cupo(m|ns)\b",
    "brinde": r"brindes?\b",
    "gratis": r"gratis\b|gratuit\w*|de graca\b|\bfree\b",
    "cashback": r"cashback\b",
    "abatimento": r"abatimento\w*",
    "liquidacao": r"liquidac\w*|queima de estoque",
    "discount": r"discount\w*",
}
_NEGATION = re.compile(r"\b(nao|nem|sem|nenhum|nenhuma|infelizmente)\b")
_NUMBER_WORDS = {
    "um": "1", "uma": "1", "dois": "2", "duas": "2", "tres": "3", "quatro": "4",
    "cinco": "5", "seis": "6", "sete": "7", "oito": "8", "nove": "9", "dez": "10",
    "doze": "12", "quinze": "15", "vinte": "20", "trinta": "30", "sessenta": "60",
    "noventa": "90",
}  # fmt: skip
_UNITS = {
    "dia": "d", "dias": "d", "hora": "h", "horas": "h", "h": "h", "hs": "h",
    "semana": "w", "semanas": "w", "mes": "m", "meses": "m", "ano": "y", "anos": "y",
    "minuto": "min", "minutos": "min", "min": "min",
}  # fmt: skip
_DURATION = re.compile(
    r"\b(\d+|"
    + "|".join(_NUMBER_WORDS)
    + r")\s*("
    + "|".join(sorted(_UNITS, key=len, reverse=True))
    + r")\b"
)
_DATE = re.compile(r"\b(\d{1,2})/(\d{1,2})(?:/\d{2,4})?\b|\bdia (\d{1,2})\b")
_RELATIVE = re.compile(
    r"\b(depois de amanha|amanha|ainda hoje|hoje mesmo|essa semana|esta semana"
    r"|semana que vem|proxima semana|ate (segunda|terca|quarta|quinta|sexta|sabado|domingo))\b"
)


def _cents(whole: str, frac: str | None) -> int:
    return int(whole.replace(".", "")) * 100 + int((frac or "0").ljust(2, "0"))


def prices(text: str) -> set[int]:
    """Money amounts in the text, in cents ("R$ 1.299,90", "300 reais")."""
    found: set[int] = set()
    for m in _PRICE.finditer(fold(text)):
        if m.group(1) is not None:
            found.add(_cents(m.group(1), m.group(2)))
        else:
            found.add(_cents(m.group(3), m.group(4)))
    return found


def percentages(text: str) -> set[float]:
    return {float(m.group(1).replace(",", ".")) for m in _PERCENT.finditer(fold(text))}


def discount_terms(text: str, *, asserted_only: bool = False) -> set[str]:
    """Which discount words appear (optionally only those not negated just before)."""
    folded = fold(text)
    found: set[str] = set()
    for name, pattern in _DISCOUNT_TERMS.items():
        for m in re.finditer(pattern, folded):
            before = folded[max(0, m.start() - 40) : m.start()]
            if asserted_only and _NEGATION.search(before):
                continue
            found.add(name)
    return found


def deadlines(text: str) -> set[str]:
    """Durations, dates and relative days ("5 dias", "48h", "15/03", "amanhã")."""
    folded = fold(text)
    found: set[str] = set()
    for m in _DURATION.finditer(folded):
        number, unit = m.group(1), _UNITS[m.group(2)]
        if number in ("um", "uma") and unit in ("d", "min"):
            continue  # "tenha um bom dia", "só um minuto": courtesy, not a deadline
        found.add(f"{_NUMBER_WORDS.get(number, number)}{unit}")
    for m in _DATE.finditer(folded):
        found.add(f"{int(m.group(1))}/{int(m.group(2))}" if m.group(1) else f"dia {m.group(3)}")
    found.update(m.group(1) for m in _RELATIVE.finditer(folded))
    return found


def _ngrams(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def leaks(reply: str, system_prompt: str, passages: Iterable[str], n: int = LEAK_NGRAM) -> bool:
    """The reply repeats `n` words in a row of the system prompt (not of a passage)."""
    secret = _ngrams(words(system_prompt), n)
    if not secret:
        return False
    for passage in passages:
        secret -= _ngrams(words(passage), n)
    return bool(secret & _ngrams(words(reply), n))


def check_output(
    reply: str,
    *,
    system_prompt: str,
    passages: Sequence[str],
    confidence: float,
    min_confidence: float = MIN_CONFIDENCE,
    max_chars: int = MAX_OUTPUT,
) -> Verdict:
    """May this reply go to the lead? Everything it promises must be in `passages`."""
    if not reply.strip():
        return _reject(EMPTY_REPLY, "")
    if len(reply) > max_chars:
        return _reject(REPLY_TOO_LONG, f"{len(reply)} > {max_chars} characters")
    meta = _META_LEAK.search(fold(reply))
    if meta:
        return _reject(PROMPT_LEAK, meta.group(0))
    if leaks(reply, system_prompt, passages):
        return _reject(PROMPT_LEAK, "reply repeats the system prompt")
    knowledge = "\n".join(passages)
    unsupported_prices = prices(reply) - prices(knowledge)
    if unsupported_prices:
        amount = min(unsupported_prices)
        return _reject(UNSUPPORTED_PRICE, f"R$ {amount // 100},{amount % 100:02d}")
    unsupported_percent = percentages(reply) - percentages(knowledge)
    if unsupported_percent:
        return _reject(UNSUPPORTED_DISCOUNT, f"{min(unsupported_percent):g}%")
    unsupported_terms = discount_terms(reply, asserted_only=True) - discount_terms(knowledge)
    if unsupported_terms:
        return _reject(UNSUPPORTED_DISCOUNT, ", ".join(sorted(unsupported_terms)))
    unsupported_deadlines = deadlines(reply) - deadlines(knowledge)
    if unsupported_deadlines:
        return _reject(UNSUPPORTED_DEADLINE, ", ".join(sorted(unsupported_deadlines)))
    if confidence < min_confidence and not content_words(reply) & content_words(knowledge):
        return _reject(OFF_TOPIC, f"confidence {confidence:.2f}, nothing from the passages")
    return PASS
