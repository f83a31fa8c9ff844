"""The web layer both FastAPI apps share (``evaluation.server`` and ``annotation_app``): the one
error contract, the request-body cap, the JSON reply that cannot fail to encode.

Layering: imports ``psc6k`` (core) and FastAPI/Starlette; never ``evaluation`` or
``annotation_app``, and core never imports it. See docs/errors.md.
"""
