"""The pure model: aggregates, events, value objects and policies."""
