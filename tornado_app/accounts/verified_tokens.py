"""Access tokens whose signature and claims this process has already verified.

Verifying a JWT (HMAC, base64, JSON, claim checks) took 13% of the server's samples in a
reconnect storm of 15,000 WebSockets (py-spy, `STORM_PY_SPY=... python -m bench.storm`; 136 µs
a decode against 0.4 µs a lookup, on the loaded 2-core machine), and the same token string
comes back with every request and every reconnect of its holder. A token string
that verified once keeps verifying until its `exp`: the secret is fixed for the process's life,
and every other check (signature, issuer, audience, type, required claims, `iat`/`nbf` already
past) depends on the string alone. So its claims are kept, keyed by the string, and a hit is
good only while `exp` is ahead; a token past it goes through the full decode again, which
answers "token expired".

Only the decode is kept. Whether the token's family is revoked or its user changed is looked up
as before (AuthService: its own short-lived cache, emptied by a revocation through this
process), so this changes nothing of revocation or role changes.
"""

import time

from .security import TokenClaims


class VerifiedTokens:
    """Bounded by entries (AuthService passes its AUTH_CACHE_SIZE, a worker's connections at
    most): a claims object (0.5 KB, tracemalloc) and its token string (0.4 KB) are ~0.9 KB, so
    50,000 are ~45 MB at worst, against ~15 KB per open connection. When full, everything goes
    (a refill costs one decode per token, as before)."""

    __slots__ = ("_claims", "size")

    def __init__(self, size: int):
        self._claims: dict[str, TokenClaims] = {}
        self.size = size

    def get(self, token: str) -> TokenClaims | None:
        """The claims of a token verified before and not yet expired, else None."""
        claims = self._claims.get(token)
        if claims is None:
            return None
        if claims.exp <= time.time():
            del self._claims[token]
            return None
        return claims

    def put(self, token: str, claims: TokenClaims) -> None:
        if len(self._claims) >= self.size:
            self._claims.clear()
        self._claims[token] = claims

    def __len__(self) -> int:
        return len(self._claims)
