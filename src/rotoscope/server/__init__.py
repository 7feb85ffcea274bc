"""rotoscope as a service: an HTTP API (FastAPI, docs at /docs), durable jobs and the web studio.

Needs the `server` extra (fastapi, uvicorn, python-multipart). `rotoscope serve` runs it.
"""

from .app import create_app, serve

__all__ = ["create_app", "serve"]
