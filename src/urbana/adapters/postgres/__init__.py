"""PostgreSQL: the event store, the subject-key vault, read-model connections."""
