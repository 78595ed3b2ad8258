"""The OpenAI-compatible HTTP server: `create_app(settings, holder)` builds the FastAPI app; the engine
behind it is shared, and may still be loading (then model routes answer 503)."""
