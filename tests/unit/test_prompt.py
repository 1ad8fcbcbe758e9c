"""Prompt building from the aggregate's history, and knowledge chunking."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import pytest

from urbana.application.ai import (
    ChatMessage,
    Passage,
    build_prompt,
    burst_of,
    chunk_markdown,
)
from urbana.domain.conversation import Conversation

PASSAGES = [Passage(text="## Horário\nAtendemos das 8h às 18h.", score=0.91)]


def lead(seq: int, text: str | None = None, kind: str = "text") -> dict[str, Any]:
    return {"role": "lead", "seq": seq, "kind": kind, "text": text or f"mensagem {seq}"}


def said(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "outbound_id": uuid4().hex, "text": text}


def prompt_for(history: list[dict[str, Any]], answered_seq: int, **kw: Any) -> Any:
    return build_prompt(
        history=history,
        answered_seq=answered_seq,
        tenant_prompt=kw.pop("tenant_prompt", "Você é a Sol, da Colchões Sono Bom."),
        passages=kw.pop("passages", PASSAGES),
        **kw,
    )


def test_system_message_has_instructions_tenant_prompt_and_numbered_passages() -> None:
    p = prompt_for([lead(1, "Qual o horário?")], 0)
    assert p.messages[0] == ChatMessage("system", p.system)
    assert "Você é a Sol, da Colchões Sono Bom." in p.system
    assert "[1] ## Horário\nAtendemos das 8h às 18h." in p.system
    assert p.system.index("INSTRUÇÕES DA EMPRESA:") < p.system.index("TRECHOS DE CONHECIMENTO:\n")
    assert p.tenant_prompt == "Você é a Sol, da Colchões Sono Bom."
    assert p.passages == tuple(PASSAGES)


def test_without_passages_the_prompt_says_none_were_found() -> None:
    p = prompt_for([lead(1)], 0, passages=[], tenant_prompt=None)
    assert "nenhum trecho relevante" in p.system
    assert "INSTRUÇÕES DA EMPRESA" not in p.system


def test_tenant_handoff_intents_are_offered_to_the_model() -> None:
    p = prompt_for([lead(1)], 0, handoff_intents=["complaint", "refund"])
    assert "refund" in p.system


def test_the_burst_is_every_unanswered_lead_message_as_the_last_user_message() -> None:
    history = [lead(1, "oi"), said("ai", "Olá!"), lead(2, "qual o horário"), lead(3, "e sábado?")]
    p = prompt_for(history, answered_seq=1)
    assert p.burst == "qual o horário\ne sábado?"
    assert p.messages[-1] == ChatMessage("user", "qual o horário\ne sábado?")
    assert [m.content for m in p.messages[1:-1]] == ["oi", "Olá!"]


def test_media_without_text_is_described() -> None:
    assert burst_of([lead(1, kind="audio") | {"text": None}], 0) == "[audio sem texto]"


def test_only_the_last_ten_messages_before_the_burst_are_context() -> None:
    history: list[dict[str, Any]] = []
    for seq in range(1, 9):
        history += [lead(seq), said("ai", f"resposta {seq}")]
    history.append(lead(9, "agora"))
    p = prompt_for(history, answered_seq=8)
    context = p.messages[1:-1]
    assert len(context) == 10
    assert context[0].content == "mensagem 4"
    assert context[-1].content == "resposta 8"


def test_roles_map_to_chat_roles_and_attendants_are_labelled() -> None:
    history = [lead(1), said("system", "Vou transferir você."), said("human", "Oi, sou a Ana.")]
    p = prompt_for([*history, lead(2)], answered_seq=1)
    roles = [(m.role, m.content) for m in p.messages[1:-1]]
    assert roles == [
        ("user", "mensagem 1"),
        ("assistant", "(mensagem automática) Vou transferir você."),
        ("assistant", "(atendente humano) Oi, sou a Ana."),
    ]


def test_context_marks_where_the_human_stretch_ended() -> None:
    conv = Conversation.start(uuid4(), "cloud", "5511988887777", uuid4())
    now = datetime.now(UTC)
    conv.receive(provider_message_id="w1", kind="text", sent_at=now, text="quero desconto")
    conv.request_handoff(reason="explicit_request")
    conv.accept_handoff(attendant="ana")
    conv.attendant_reply(now=now, outbound_id="o1", attendant="ana", text="Temos 5% no Pix.")
    conv.return_to_ai()
    conv.receive(provider_message_id="w2", kind="text", sent_at=now, text="e a entrega?")

    p = prompt_for(conv.history, conv.answered_seq)
    contents = [m.content for m in p.messages]
    marker = next(i for i, m in enumerate(p.messages) if "Fim do atendimento humano" in m.content)
    assert p.messages[marker].role == "system"
    assert contents.index("(atendente humano) Temos 5% no Pix.") < marker
    assert p.messages[-1] == ChatMessage("user", "e a entrega?")
    assert marker == len(p.messages) - 2  # right before the burst
    assert p.burst == "e a entrega?"


def test_marker_is_kept_but_does_not_count_as_a_message() -> None:
    history = [lead(s) for s in range(1, 11)] + [
        {"role": "marker", "text": "human_stretch_ended", "seq": 10}
    ]
    p = prompt_for([*history, lead(11)], answered_seq=10)
    assert len(p.messages) == 1 + 10 + 1 + 1  # system, 10 messages, marker, burst


# ------------------------------------------------------------------- chunking

DOC = """# Colchões Sono Bom

Somos uma loja de colchões em Curitiba.

## Horário de atendimento

Atendemos de segunda a sexta, das 8h às 18h, e aos sábados das 9h às 13h.

## Entrega

{entrega}

```
# isto é código, não um título
```
"""


def entrega(n: int) -> str:
    return " ".join(f"Frase {i} sobre a entrega na região metropolitana." for i in range(n))


def test_chunks_start_with_their_heading_trail() -> None:
    chunks = chunk_markdown(DOC.format(entrega="Entregamos em 5 dias."), max_chars=300)
    assert chunks[0] == "# Colchões Sono Bom\nSomos uma loja de colchões em Curitiba."
    assert chunks[1].startswith("# Colchões Sono Bom\n## Horário de atendimento\nAtendemos")
    assert chunks[2].startswith("# Colchões Sono Bom\n## Entrega\n")


def test_headings_inside_code_fences_do_not_split() -> None:
    chunks = chunk_markdown(DOC.format(entrega="Entregamos em 5 dias."), max_chars=300)
    assert "# isto é código" in chunks[-1]
    assert len(chunks) == 3


def test_long_sections_split_under_the_limit_with_sentence_overlap() -> None:
    chunks = chunk_markdown(DOC.format(entrega=entrega(40)), max_chars=300, overlap=80)
    long = [c for c in chunks if "## Entrega" in c]
    assert len(long) > 3
    assert all(len(c) <= 300 for c in chunks)
    for first, second in itertools.pairwise(long):
        last_sentence = first.rsplit(". ", 1)[-1]
        assert last_sentence.rstrip(".") in second  # the overlap carries it over


def test_no_overlap_when_zero() -> None:
    chunks = chunk_markdown(entrega(40), max_chars=200, overlap=0)
    body = " ".join(chunks)
    assert body.count("Frase 7 ") == 1


def test_plain_text_without_headings_is_chunked_too() -> None:
    assert chunk_markdown("Só um parágrafo.") == ["Só um parágrafo."]
    assert chunk_markdown("   \n\n ") == []


def test_a_single_huge_word_is_hard_split() -> None:
    chunks = chunk_markdown("x" * 1000, max_chars=300)
    assert all(len(c) <= 300 for c in chunks)
    assert "".join(chunks) == "x" * 1000


def test_tiny_max_chars_is_refused() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        chunk_markdown("texto", max_chars=10)
