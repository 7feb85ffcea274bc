"""rotoscope as a service: an HTTP API (FastAPI, docs at /docs), durable jobs and the web studio.

Needs the `server` extra (fastapi, uvicorn, python-multipart). `rotoscope serve` runs it.
"""

__all__ = ["create_app", "serve"]


def __getattr__(name):
    # loaded on first use: a job's worker process (python -m rotoscope.server.worker) imports this package first,
    # and must reach its own signal handling before torch loads, or a job cancelled while its worker starts would
    # leave a KeyboardInterrupt traceback in the job's log
    if name in __all__:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
