"""Password hashing (bcrypt, off the IOLoop) and JSON Web Tokens (HS256, every claim checked)."""

import asyncio
import logging
import os
import secrets
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import bcrypt
import jwt

from ..core.errors import unauthorized
from ..core.wire import bounded_int

log = logging.getLogger(__name__)

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["sub", "type", "jti", "iat", "exp", "iss", "aud"]
TIME_CLAIMS = ("exp", "iat", "nbf")

# bcrypt releases the GIL, so a small pool hashes in parallel while the IOLoop keeps serving.
_hash_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bcrypt")


class PasswordHasher:
    def __init__(self, rounds: int):
        self.rounds = rounds
        # Verifying against this when the user does not exist costs the same as a real check,
        # so response times do not tell which usernames exist.
        self._dummy_hash = bcrypt.hashpw(b"not a real password", bcrypt.gensalt(rounds))

    async def hash(self, password: str) -> str:
        loop = asyncio.get_running_loop()
        salt = bcrypt.gensalt(self.rounds)
        digest = await loop.run_in_executor(_hash_pool, bcrypt.hashpw, password.encode(), salt)
        return digest.decode()

    async def verify(self, password: str, hashed: str | None) -> bool:
        loop = asyncio.get_running_loop()
        target = hashed.encode() if hashed else self._dummy_hash
        try:
            ok = await loop.run_in_executor(_hash_pool, bcrypt.checkpw, password.encode(), target)
        except ValueError:
            return False
        return ok and hashed is not None


@dataclass(frozen=True)
class TokenClaims:
    sub: str
    type: str
    jti: str
    fam: str
    exp: float = 0.0  # seconds since the epoch: open connections lose the token's rights then


class TokenService:
    def __init__(self, secret: str, issuer: str, audience: str, access_ttl: int, refresh_ttl: int):
        self.secret = secret
        self.issuer = issuer
        self.audience = audience
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl

    def issue(self, user_id: str, family: str, token_type: str, jti: str | None = None) -> str:
        now = datetime.now(timezone.utc)
        ttl = self.access_ttl if token_type == "access" else self.refresh_ttl
        claims = {"sub": user_id, "type": token_type, "jti": jti or uuid.uuid4().hex,
                  "fam": family, "iat": now, "exp": now + timedelta(seconds=ttl),
                  "iss": self.issuer, "aud": self.audience}
        return jwt.encode(claims, self.secret, algorithm=ALGORITHM)

    def decode(self, token: str, expected_type: str) -> TokenClaims:
        try:
            claims = jwt.decode(
                token, self.secret, algorithms=[ALGORITHM], audience=self.audience,
                issuer=self.issuer, options={"require": REQUIRED_CLAIMS}, leeway=0)
        except jwt.ExpiredSignatureError:
            raise unauthorized("token expired") from None
        except jwt.PyJWTError:
            raise unauthorized("invalid token") from None
        if claims.get("type") != expected_type:
            raise unauthorized(f"not an {expected_type} token" if expected_type == "access"
                               else f"not a {expected_type} token")
        fields = (claims.get("sub"), claims.get("jti"), claims.get("fam"))
        if not all(isinstance(value, str) and value for value in fields):
            raise unauthorized("invalid token")
        # PyJWT takes a NumericDate given as a string ("exp": "9999999999") or a float; we
        # only ever issue integers, so anything else was not made by us.
        if not all(bounded_int(claims[name]) for name in TIME_CLAIMS if name in claims):
            raise unauthorized("invalid token")
        return TokenClaims(sub=claims["sub"], type=claims["type"], jti=claims["jti"],
                           fam=claims["fam"], exp=float(claims["exp"]))


def resolve_jwt_secret(configured: str | None, data_dir: Path) -> str:
    """The configured secret, or in development one generated once and kept in the data dir."""
    if configured:
        return configured
    path = Path(data_dir) / "jwt_secret"
    if path.exists():
        secret = path.read_text().strip()
        if secret:
            return secret
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(secret)
    log.warning("JWT_SECRET is not set: generated one and kept it in %s (development only)", path)
    return secret
