"""The COCOeval-shaped API, kept importable from its old place.

It lives in the core: ``from psc6k import PSC6KEval`` (:mod:`psc6k.pckeval`), which works from
any repository, including one with an ``evaluation/`` folder of its own.
"""

from psc6k.pckeval import PSC6KEval

__all__ = ["PSC6KEval"]
