"""User accounts: storage, uniqueness and the public shape."""

from collections.abc import Callable

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from . import grant_changes
from ..core.clock import iso, utcnow
from ..core.errors import conflict, not_found
from ..core.ids import parse_id
from ..storage.pagination import fetch_page


def user_public(doc: dict) -> dict:
    return {"id": str(doc["_id"]), "username": doc["username"], "email": doc["email"],
            "role": doc["role"], "created_at": iso(doc["created_at"])}


# Told the id of a user whose role this process has just changed (after the change is stored and
# recorded for other workers, accounts/grant_changes.py): AuthService forgets its cached lookups
# of that user, and realtime.grants re-checks open connections at once rather than at its next
# pass. Must not block or raise.
RoleChangeListener = Callable[[str], None]


def _duplicate_field(exc: DuplicateKeyError) -> str:
    text = str(exc.details or exc)
    return "email" if "email" in text else "username"


class UserStore:
    def __init__(self, db):
        self.db = db
        self.users = db["users"]
        # Plain reads by id (every authenticated request's lookup) go through the read pool: on
        # FerretDB the write connection is one, and they need not queue behind its writes.
        self.users_read = db.read("users")
        self._listeners: list[RoleChangeListener] = []

    def add_listener(self, listener: RoleChangeListener) -> None:
        """listener(user_id) is called after each role change made through this store."""
        self._listeners.append(listener)

    async def create(self, username: str, email: str, password_hash: str, role: str = "user",
                     op_id=None) -> dict:
        """A new user; with op_id (an Idempotency-Key's) as its id, and a retry whose first run
        created it gets that user back rather than a conflict with itself."""
        doc = {"username": username, "username_key": username.lower(), "email": email.lower(),
               "role": role, "password_hash": password_hash, "created_at": utcnow()}
        if op_id is not None:
            doc["_id"] = op_id
        try:
            await self.users.insert_one(doc)
        except DuplicateKeyError as exc:
            done = op_id and await self.users.find_one({"_id": op_id})
            if done:
                return done
            raise conflict(f"{_duplicate_field(exc)} is already taken") from None
        return doc

    async def get(self, user_id: str | ObjectId) -> dict | None:
        oid = user_id if isinstance(user_id, ObjectId) else parse_id(user_id)
        return await self.users_read.find_one({"_id": oid}) if oid else None

    async def find_by_login(self, login: str) -> dict | None:
        """The user whose username or email this is, case-insensitively."""
        key = login.lower()
        field = "email" if "@" in key else "username_key"
        return await self.users.find_one({field: key})

    async def find_by_username(self, username: str) -> dict | None:
        return await self.users.find_one({"username_key": username.lower()})

    async def list(self, limit: int, cursor: str | None):
        return await fetch_page(self.users, {}, field="created_at", descending=False,
                                limit=limit, cursor=cursor, order="users")

    async def set_role(self, user_id: str, role: str) -> dict:
        oid = parse_id(user_id)
        doc = oid and await self.users.find_one_and_update(
            {"_id": oid}, {"$set": {"role": role}}, return_document=True)
        if not doc:
            raise not_found("user")
        await grant_changes.record(self.db, user_id=str(doc["_id"]))
        for listener in self._listeners:
            listener(str(doc["_id"]))
        return doc
