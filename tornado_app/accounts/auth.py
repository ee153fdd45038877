"""Logins, token families with refresh rotation and reuse detection, logout and throttling.

A login starts a token family. Every access and refresh token carries its family id (`fam`);
the family document holds the jti of the one refresh token that may still be used. Rotation is
a single conditional update on that jti, so of two concurrent refreshes with one token exactly
one wins, and a token presented again after rotation revokes the whole family.
"""

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

from pymongo.errors import DuplicateKeyError

from . import grant_changes
from ..core.clock import utcnow
from ..core.errors import ApiError, unauthorized
from .security import PasswordHasher, TokenClaims, TokenService
from .users import UserStore
from .verified_tokens import VerifiedTokens

AUTH_CACHE_SECONDS = 2.0
AUTH_CACHE_SIZE = 50_000


def tokens_public(tokens: TokenService, user: dict, family: str, refresh_jti: str) -> dict:
    """The Tokens body: a new access token, and the refresh token the family lets be used."""
    user_id = str(user["_id"])
    access = tokens.issue(user_id, family, "access")
    refresh = tokens.issue(user_id, family, "refresh", jti=refresh_jti)
    return {"access_token": access, "refresh_token": refresh, "token_type": "bearer",
            "expires_in": tokens.access_ttl}


# Told the id of a token family once this process has revoked it (logout, a reused refresh
# token), after the revocation is stored and recorded for other workers
# (accounts/grant_changes.py): realtime.grants re-checks open connections at once rather than at
# its next pass. Must not block or raise.
RevokeListener = Callable[[str], None]


class AuthService:
    def __init__(self, db, users: UserStore, hasher: PasswordHasher, tokens: TokenService,
                 max_failures: int, window: int):
        self.db = db
        self.families = db["token_families"]
        # The check of every authenticated request (and WebSocket upgrade) is a plain read:
        # through the read pool, not queued on FerretDB's one write connection behind writes
        # (a revocation is committed, so visible there, before it is acknowledged).
        self.families_read = db.read("token_families")
        self.failures = db["login_failures"]
        self.users = users
        self.hasher = hasher
        self.tokens = tokens
        self.max_failures = max_failures
        self.window = window
        # (family, user id) -> (valid until, user): recent successful lookups, so a burst of
        # requests or WebSocket upgrades with one token costs one database round trip.
        self._recent: dict[tuple[str, str], tuple[float, dict]] = {}
        self._lookups: dict[tuple[str, str], asyncio.Future] = {}
        self.verified = VerifiedTokens(AUTH_CACHE_SIZE)  # tokens already decoded, until their exp
        users.add_listener(self._forget_user)
        self._revoke_listeners: list[RevokeListener] = []

    def add_listener(self, listener: RevokeListener) -> None:
        """listener(family) is called once per family this service revokes."""
        self._revoke_listeners.append(listener)

    async def register(self, username: str, email: str, password: str, role: str = "user",
                       op_id=None) -> dict:
        if op_id is not None:
            # A retry of an Idempotency-Key whose first run created the user (and died before
            # answering): that user is the answer, not a conflict with the retry's own name.
            done = await self.users.get(op_id)
            if done is not None:
                return done
        # Checked first only to spare the bcrypt work; the unique indexes are what guarantee it.
        if await self.users.find_by_username(username):
            raise ApiError(409, "conflict", "username is already taken")
        if await self.users.find_by_login(email):
            raise ApiError(409, "conflict", "email is already taken")
        return await self.users.create(username, email, await self.hasher.hash(password), role,
                                       op_id=op_id)

    async def login(self, login: str, password: str) -> dict:
        user = await self.users.find_by_login(login)
        # Unknown logins are throttled under their own name, exactly like real ones: the answers
        # do not tell which usernames exist.
        throttle_key = user["username_key"] if user else login.lower()
        window = await self._reserve_attempt(throttle_key)
        if not await self.hasher.verify(password, user["password_hash"] if user else None):
            # The reserved attempt stays counted: that is the failure.
            raise ApiError(401, "invalid_credentials", "wrong username or password",
                           headers={"WWW-Authenticate": "Bearer"})
        await self._release_attempt(throttle_key, window)
        return await self._start_family(user)

    async def refresh(self, refresh_token: str, op_id=None) -> dict:
        claims = self.tokens.decode(refresh_token, "refresh")
        now = utcnow()
        # Under an Idempotency-Key the new refresh token's id is the key's op_id: a retry whose
        # first run rotated the family (and died before answering) recognises that rotation as
        # its own instead of taking it for the reuse of a leaked token.
        new_jti = str(op_id) if op_id is not None else uuid.uuid4().hex
        family = await self.families.find_one_and_update(
            {"_id": claims.fam, "refresh_jti": claims.jti, "revoked": False,
             "expires_at": {"$gt": now}},
            {"$set": {"refresh_jti": new_jti, "rotated_at": now,
                      "expires_at": now + timedelta(seconds=self.tokens.refresh_ttl)}})
        if family is None and op_id is not None:
            family = await self.families.find_one(
                {"_id": claims.fam, "refresh_jti": new_jti, "revoked": False,
                 "expires_at": {"$gt": now}})
        if family is None:
            # Either the family is gone or revoked, or this token was already rotated away:
            # a reused refresh token means it leaked, so nothing of that family stays valid.
            await self.revoke_family(claims.fam)
            raise unauthorized("refresh token is no longer valid")
        user = await self.users.get(claims.sub)
        if user is None:
            await self.revoke_family(claims.fam)
            raise unauthorized("user no longer exists")
        return self._tokens_for(user, claims.fam, new_jti)

    async def logout(self, family: str) -> None:
        await self.revoke_family(family)

    async def revoke_family(self, family: str) -> None:
        for key in [key for key in self._recent if key[0] == family]:
            del self._recent[key]
        revoked = await self.families.update_one({"_id": family, "revoked": False},
                                                 {"$set": {"revoked": True}})
        if revoked.matched_count:
            # News for the open connections of every worker (realtime.grants); once per family,
            # however often a leaked refresh token is replayed.
            await grant_changes.record(self.db, family=family)
            for listener in self._revoke_listeners:
                listener(family)

    async def authenticate(self, access_token: str) -> tuple[dict, str]:
        """The user an access token belongs to, and its family; 401 if anything is off."""
        user, claims = await self.authenticate_claims(access_token)
        return user, claims.fam

    async def authenticate_claims(self, access_token: str) -> tuple[dict, TokenClaims]:
        """The user an access token belongs to, and the token's claims; 401 if anything is off.

        A successful lookup is reused for AUTH_CACHE_SECONDS, and concurrent lookups of one
        family share a single query. Revocation and role changes made through this process take
        effect at once; made through another worker, within AUTH_CACHE_SECONDS. (Open
        connections are re-checked by realtime.grants.)
        """
        claims = self.verified.get(access_token)
        if claims is None:
            claims = self.tokens.decode(access_token, "access")
            self.verified.put(access_token, claims)
        key = (claims.fam, claims.sub)
        recent = self._recent.get(key)
        if recent is not None and recent[0] > time.monotonic():
            return recent[1], claims
        lookup = self._lookups.get(key)
        if lookup is None:
            lookup = asyncio.ensure_future(self._lookup(*key))
            self._lookups[key] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(key, None))
        return await asyncio.shield(lookup), claims

    async def _lookup(self, family_id: str, user_id: str) -> dict:
        family = await self.families_read.find_one({"_id": family_id},
                                                   {"revoked": 1, "user_id": 1})
        if family is None or family["revoked"] or family["user_id"] != user_id:
            raise unauthorized("token has been revoked")
        user = await self.users.get(user_id)
        if user is None:
            raise unauthorized("user no longer exists")
        if len(self._recent) >= AUTH_CACHE_SIZE:
            self._recent.clear()
        self._recent[(family_id, user_id)] = (time.monotonic() + AUTH_CACHE_SECONDS, user)
        return user

    def _forget_user(self, user_id: str) -> None:
        for key in [key for key in self._recent if key[1] == user_id]:
            del self._recent[key]

    async def purge_expired(self) -> int:
        now = utcnow()
        done = await self.families.delete_many({"expires_at": {"$lt": now}})
        stale = now - timedelta(seconds=self.window)
        await self.failures.delete_many({"window_start": {"$lt": stale}})
        await grant_changes.purge(self.db)
        return done.deleted_count

    async def _start_family(self, user: dict) -> dict:
        family = uuid.uuid4().hex
        jti = uuid.uuid4().hex
        now = utcnow()
        expires = now + timedelta(seconds=self.tokens.refresh_ttl)
        await self.families.insert_one({"_id": family, "user_id": str(user["_id"]),
                                        "refresh_jti": jti, "revoked": False,
                                        "created_at": now, "expires_at": expires})
        return self._tokens_for(user, family, jti)

    def _tokens_for(self, user: dict, family: str, refresh_jti: str) -> dict:
        return tokens_public(self.tokens, user, family, refresh_jti)

    async def _reserve_attempt(self, key: str):
        """Counts this attempt against the key's window before the password is checked, or
        answers 429 when the window is full; returns the window's start.

        Checking first and counting after the (slow) hash let any number of concurrent guesses
        through. Here each attempt takes a slot with one atomic conditional update, so however
        the guesses are timed, at most `max_failures` wrong ones per window reach the hasher
        (a right one gives its slot back).
        """
        for _ in range(3):
            now = utcnow()
            window_open = now - timedelta(seconds=self.window)
            # A slot in the open window, if one is left.
            doc = await self.failures.find_one_and_update(
                {"_id": key, "window_start": {"$gt": window_open},
                 "count": {"$lt": self.max_failures}},
                {"$inc": {"count": 1}})
            if doc is not None:
                return doc["window_start"]
            # No window, or only a past one: this attempt opens a new one.
            try:
                await self.failures.update_one(
                    {"_id": key, "window_start": {"$lte": window_open}},
                    {"$set": {"count": 1, "window_start": now}}, upsert=True)
                return now
            except DuplicateKeyError:
                pass  # the window is open: full, or opened just now by a concurrent attempt
            doc = await self.failures.find_one({"_id": key})
            if doc is not None and doc["count"] >= self.max_failures \
                    and doc["window_start"] > window_open:
                retry_after = (doc["window_start"] + timedelta(seconds=self.window)
                               - now).total_seconds()
                raise ApiError(429, "rate_limited", "too many failed logins, try again later",
                               headers={"Retry-After": str(max(1, int(retry_after + 0.999)))})
        # The window kept changing under us: count it as full rather than let a guess through.
        raise ApiError(429, "rate_limited", "too many failed logins, try again later",
                       headers={"Retry-After": "1"})

    async def _release_attempt(self, key: str, window_start) -> None:
        """A successful login gives its slot back (in the window it was taken from); the
        failures before it still count until that window ends, as the contract says."""
        await self.failures.update_one(
            {"_id": key, "window_start": window_start, "count": {"$gt": 0}},
            {"$inc": {"count": -1}})
