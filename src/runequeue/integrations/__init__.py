"""Small helpers for web frameworks: `runequeue.integrations.asgi` for Starlette and FastAPI."""
