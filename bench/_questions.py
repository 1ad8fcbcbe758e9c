"""Leads' questions as they arrive: a few hundred distinct ones repeated with a Zipf-like
distribution, plus a share written only once, all deterministic from a seed.

Leads write in a hurry: greetings first ("oi boa tarde"), no accents, abbreviations
("vc", "qto", "pq", "tb"), typos (a letter swapped, doubled or dropped), little
punctuation. The distinct questions are the ones many leads of a business ask; the
unique ones carry something of their own (a product, a number, a place), which no cache
of whole questions can have seen.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

GREETINGS = (
    "",
    "",
    "",
    "oi ",
    "oi boa tarde ",
    "boa tarde, ",
    "bom dia ",
    "bom diaa ",
    "ola ",
    "oii tudo bem? ",
    "boa noite ",
    "opa ",
    "e ai ",
)
QUESTIONS = (
    "qual o horario de atendimento",
    "qual horario vcs atendem",
    "vcs abrem sabado",
    "abre domingo",
    "ate que horas vcs ficam abertos",
    "qto custa",
    "quanto custa o plano basico",
    "qual o valor",
    "qual o preco da mensalidade",
    "tem desconto a vista",
    "aceita pix",
    "aceita cartao",
    "da pra parcelar",
    "parcela em qtas vezes",
    "vcs entregam",
    "faz entrega no meu bairro",
    "qto tempo demora a entrega",
    "qual o prazo de entrega",
    "o frete e gratis",
    "onde fica a loja",
    "qual o endereco",
    "tem estacionamento",
    "como faco pra agendar",
    "quero marcar um horario",
    "tem vaga pra amanha",
    "como funciona",
    "vc pode me explicar como funciona",
    "tem garantia",
    "como faco a troca",
    "posso devolver",
    "qual o telefone de vcs",
    "vcs tem site",
    "tem instagram",
    "vcs trabalham com nota fiscal",
    "tem pronta entrega",
    "ainda tem disponivel",
    "tem outras cores",
    "qual o tamanho",
    "serve pra crianca",
    "tem promocao",
)
SUFFIXES = ("", "?", "?", "??", " por favor", " pfv", " ?", "!")
PLACES = ("moema", "tatuape", "centro", "pinheiros", "santana", "osasco", "abc", "lapa")
PRODUCTS = ("tenis", "mesa", "cadeira", "bolo", "kit", "plano", "curso", "pacote")
_ABBREVIATIONS = {"voce": "vc", "voces": "vcs", "quanto": "qto", "porque": "pq", "tambem": "tb"}


def typo(text: str, rng: random.Random) -> str:
    """One slip of the thumb: two letters swapped, one doubled or one dropped."""
    letters = [i for i, c in enumerate(text) if c.isalpha()]
    if len(letters) < 4:
        return text
    i = rng.choice(letters[1:-1])
    kind = rng.randrange(3)
    if kind == 0 and i + 1 < len(text):
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    if kind == 1:
        return text[:i] + text[i] + text[i:]
    return text[:i] + text[i + 1 :]


def distinct_questions(n: int, seed: int) -> list[str]:
    """`n` distinct questions, the most asked first (rank 1 is the head of the Zipf)."""
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        text = rng.choice(GREETINGS) + rng.choice(QUESTIONS) + rng.choice(SUFFIXES)
        if rng.random() < 0.25:
            text = typo(text, rng)
        if rng.random() < 0.2:
            text = text.capitalize()
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def unique_question(rng: random.Random) -> str:
    """A question no other lead asks: a base question with details of its own."""
    base = rng.choice(QUESTIONS)
    detail = rng.choice(
        (
            f"o {rng.choice(PRODUCTS)} {rng.randrange(10, 999)}",
            f"pra {rng.choice(PLACES)} cep 0{rng.randrange(1000, 9999)}-{rng.randrange(100, 999)}",
            f"meu pedido {rng.randrange(10_000, 99_999)}",
            f"pra dia {rng.randrange(1, 29)}/{rng.randrange(1, 13)}",
        )
    )
    words = [_ABBREVIATIONS.get(w, w) for w in f"{base} {detail}".split()]
    return typo(rng.choice(GREETINGS) + " ".join(words) + rng.choice(SUFFIXES), rng)


class QuestionMix:
    """An endless, deterministic stream of questions: Zipf over `distinct`, plus
    `unique_share` of one-off ones."""

    def __init__(
        self, *, distinct: int = 300, unique_share: float = 0.3, zipf_s: float = 1.1, seed: int = 7
    ) -> None:
        self.distinct = distinct_questions(distinct, seed)
        self.unique_share = unique_share
        self._weights = [1 / (rank**zipf_s) for rank in range(1, distinct + 1)]
        self._rng = random.Random(seed + 1)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self._rng.random() < self.unique_share:
            return unique_question(self._rng)
        return self._rng.choices(self.distinct, weights=self._weights)[0]
