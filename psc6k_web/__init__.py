"""The web layer both FastAPI apps share (``evaluation.server`` and ``annotation_app``), each
cross-cutting concern once: ``settings`` (the pydantic base of both apps' settings),
``lifespan``, ``deps`` (``Annotated`` dependencies), ``errors`` (the one error contract),
``auth`` (admin authentication with its failure throttle), ``headers`` (security headers,
``HEAD``), ``text`` (the text rule as a pydantic type), ``ratelimit`` (client addresses, rate
limits), ``body_limit`` (the body cap), ``uploads`` (admission of big uploads), ``responses``
(the JSON reply that cannot fail to encode); ``app.install_web_layer`` installs them on an app.
``server`` is the one HTTP server runner of both serve commands (uvicorn bounded before the app
runs: head size and time, open connections), configured by ``limits.ServerLimits``.

Layering: imports ``psc6k`` (core) and FastAPI/Starlette; never ``evaluation`` or
``annotation_app``, and core never imports it. See docs/errors.md and docs/server.md.
"""
