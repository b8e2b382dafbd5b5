"""``ddpm serve``: a local web page to sample a run, watch its reverse process, inpaint, and see its curves.

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart): ``pip install -e ".[serve]"``.
:func:`ddpm.serve.server.serve` starts it; :func:`ddpm.serve.app.create_app` is the ASGI application.
"""
