"""Settings both web services share: a pydantic-settings base each app subclasses with its own
environment prefix (``PSC6K_ANNOT_`` for the annotation app, ``PSC6K_SERVE_`` for the scoring
server). ``PSC6K_ADMIN_TOKEN`` sets the admin token of either.

Worker processes get the same settings from the environment (:meth:`WebSettings.to_env`
writes them, the app's factory reads them back) or pickled with a factory.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: Admin authentication failures allowed per client address before 429 (``limits`` notation).
ADMIN_FAILURE_LIMIT = "10/minute"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value) -> tuple[str, ...]:
    """``"10.0.0.1, 192.168.0.0/16"`` or a sequence -> normalised CIDR strings; ValueError
    naming the first entry that is not an address or a network."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    out = []
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        try:
            out.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or network (e.g. 10.0.0.5 or 10.0.0.0/8)") from None
    return tuple(out)


class WebSettings(BaseSettings):
    """What the web layer needs of every app's settings.

    Parameters
    ----------
    admin_token : str, optional
        Bearer token of the admin API (``PSC6K_ADMIN_TOKEN``); without one the admin API
        answers 403.
    trusted_proxies : tuple of str
        Addresses or CIDR networks of reverse proxies in front of the server. Only a request
        whose TCP peer is one of them has its client address taken from ``X-Forwarded-For``
        (the rightmost entry that is not itself a trusted proxy). Empty (the default): the
        client address is always the TCP peer.
    admin_failure_limit : str
        Failed admin authentications allowed per client address (``limits`` notation, e.g.
        ``"10/minute"``); beyond, 429 with ``Retry-After`` until the window has passed.
    rate_limit_storage : str
        ``limits`` storage URI of the counters: ``memory://`` (per process) or a shared one
        (``redis://host:6379``) when several workers must share them.
    """

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    admin_token: str | None = Field(None, validation_alias=AliasChoices("admin_token", "PSC6K_ADMIN_TOKEN"))
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = ()
    admin_failure_limit: str = ADMIN_FAILURE_LIMIT
    rate_limit_storage: str = "memory://"

    @field_validator("admin_token", mode="before")
    @classmethod
    def _blank_is_none(cls, v):
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, v):
        return parse_networks(v)

    @field_validator("admin_failure_limit")
    @classmethod
    def _limit(cls, v):
        return check_rate_limit(v)

    def proxy_networks(self) -> tuple[Network, ...]:
        return tuple(ipaddress.ip_network(n) for n in self.trusted_proxies)

    def to_env(self) -> dict[str, str]:
        """Environment variables from which ``type(self)()`` rebuilds these settings in a worker
        process (each field under the class's prefix; ``None`` fields are left out)."""
        env = {}
        for name, value in self.model_dump().items():
            if value is not None:
                env[self.env_name(name)] = (",".join(value) if name == "trusted_proxies" else
                                            value if isinstance(value, str) else json.dumps(value))
        return env

    @classmethod
    def env_name(cls, name: str) -> str:
        """The environment variable of field ``name``: its ``PSC6K_...`` alias, else prefix + NAME."""
        alias = cls.model_fields[name].validation_alias
        for choice in getattr(alias, "choices", ()):
            if isinstance(choice, str) and choice.startswith("PSC6K_"):
                return choice
        return cls.model_config.get("env_prefix", "") + name.upper()


def check_rate_limit(value: str | None) -> str | None:
    """``value`` unchanged when it is a rate limit in the ``limits`` notation (or None)."""
    if value is not None:
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate limit such as '20/minute' or '5/second;100/hour'") from None
    return value
