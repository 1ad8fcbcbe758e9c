"""The HTTP entry points (FastAPI)."""
