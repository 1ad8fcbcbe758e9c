"""Kafka adapters: topic definitions, the outbox relay, and the consumers."""
