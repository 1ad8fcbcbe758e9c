"""Connecting a gateway: one spec per channel kind."""

from __future__ import annotations

from urbana.application.gateways import GATEWAYS
from urbana.domain.channels import CHANNELS


def test_every_channel_kind_has_a_gateway_spec_and_no_other_kind_does() -> None:
    assert sorted(GATEWAYS) == sorted(CHANNELS)
