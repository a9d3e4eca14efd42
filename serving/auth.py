"""Bearer API keys. The server keeps only each key's SHA-256 (so no secret lands in Ray's deployment config or
logs) and compares digests with `hmac.compare_digest` (constant time). The key env var may hold several keys
separated by commas, so a key can be rotated without downtime: add the new key, move clients, drop the old one.

`None` digests mean anonymous access; only `anonymous_allowed` (loopback + an explicit spec flag) produces that.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Sequence

from voxray.platform.errors import VoxrayError
from voxray.platform.paths import is_loopback_host


class MissingApiKey(VoxrayError):
    """The server would run without a key where that is not allowed, or the key's env var is unset/empty."""

    exit_code = 2


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def digests_from_env(env_var: str) -> tuple[str, ...]:
    """Digests of the comma-separated keys in `env_var`; unset or empty → MissingApiKey."""
    keys = [k.strip() for k in os.environ.get(env_var, "").split(",") if k.strip()]
    if not keys:
        raise MissingApiKey(f"serve.api_key_env names {env_var!r}, but that environment variable is unset or empty",
                            hint=f"export {env_var}=<a long random key> (several keys: k1,k2 for rotation)")
    return tuple(key_digest(k) for k in keys)


def server_digests(api_key_env: str | None, allow_anonymous: bool, host: str | None,
                   where: str = "serve") -> tuple[str, ...] | None:
    """The key digests a server checks, or None for anonymous access — refused unless the spec sets
    `allow_anonymous: true` and the server binds a loopback address (`host` None: the bind address is unknown)."""
    if api_key_env is not None:
        return digests_from_env(api_key_env)
    if allow_anonymous and host is not None and is_loopback_host(host):
        return None
    bind = f"on {host!r}" if host is not None else "where the bind address is set outside the spec (a RayService)"
    raise MissingApiKey(f"{where}: refusing to serve {bind} without an API key",
                        hint="set serve.api_key_env to an env var holding the key (and export it); anonymous access "
                             "needs serve.api_key_env: null, serve.allow_anonymous: true and a loopback serve.host")


def authorized(header: str | None, digests: Sequence[str] | str | None) -> bool:
    """True when auth is off (`digests` None), or `header` is `Bearer <key>` for one of the keys."""
    if digests is None:
        return True
    if isinstance(digests, str):
        digests = (digests,)
    if not header:
        return False
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    given = key_digest(token.strip())
    match = False
    for digest in digests:  # no early exit: the time taken does not say which key matched
        match |= hmac.compare_digest(given, digest)
    return match
