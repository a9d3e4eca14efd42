"""Bearer API keys. The server keeps only the key's SHA-256 (so the secret never lands in Ray's deployment
config or logs) and compares digests with `hmac.compare_digest` (constant time)."""

from __future__ import annotations

import hashlib
import hmac
import os

from voxray.platform.errors import VoxrayError


class MissingApiKey(VoxrayError):
    """The spec asks for an API key but its environment variable is unset or empty."""

    exit_code = 2


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def digest_from_env(env_var: str | None) -> str | None:
    """Digest of the key in `env_var`; None when auth is disabled (env_var None). Unset/empty → MissingApiKey."""
    if env_var is None:
        return None
    key = os.environ.get(env_var, "")
    if not key:
        raise MissingApiKey(f"serve.api_key_env names {env_var!r}, but that environment variable is unset or empty",
                            hint=f"export {env_var}=<a long random key>, or set serve.api_key_env: null "
                                 "(no auth; loopback only)")
    return key_digest(key)


def authorized(header: str | None, digest: str | None) -> bool:
    """True when auth is off, or `header` is `Bearer <key>` for the key with `digest`."""
    if digest is None:
        return True
    if not header:
        return False
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    return hmac.compare_digest(key_digest(token.strip()), digest)
