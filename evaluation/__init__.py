"""PSC6K evaluation: the COCOeval-shaped API, ``psc6k eval`` and the scoring server.

Importing this package must stay cheap (no FastAPI): ``psc6k eval`` is timed end to end.
"""
