"""The knowledge base is searched with what the lead asked, however it was written."""

from __future__ import annotations

import pytest

from urbana.application.search_text import search_text


@pytest.mark.parametrize(
    "burst",
    [
        "vcs abrem sabado",
        "Vcs abrem sabado?",
        "oi boa tarde, vcs abrem sabado??",
        "bom diaa vcs abrem sabado pfv",
        "Oii tudo bem? VCS ABREM SABADO!",
        "Olá, boa noite! vcs abrem sabado por favor",
        "e aí, vcs   abrem sabado? obrigado",
        "vcs abrem sabadooo???",
    ],
)
def test_one_question_written_many_ways_is_one_search(burst: str) -> None:
    assert search_text(burst) == "vcs abrem sabado"


@pytest.mark.parametrize(
    ("burst", "asked"),
    [
        ("oitenta reais da pra pagar?", "oitenta reais da pra pagar"),  # not a greeting
        ("opala 1980 ainda tem?", "opala 1980 ainda tem"),
        ("custa R$ 1000 ou 10%?", "custa r$ 1000 ou 10%"),  # amounts keep their digits
        ("meu cep é 01234-567", "meu cep é 01234 567"),  # accents stay
        ("qual o horário? boa tarde", "qual o horário boa tarde"),  # only an opening one
    ],
)
def test_what_was_asked_is_kept(burst: str, asked: str) -> None:
    assert search_text(burst) == asked


@pytest.mark.parametrize(
    ("burst", "asked"), [("Oi!!", "oi"), ("boa tarde, tudo bem?", "boa tarde tudo bem")]
)
def test_a_burst_that_is_only_a_greeting_is_searched_as_it_is(burst: str, asked: str) -> None:
    assert search_text(burst) == asked
