"""Auth and user models."""

from typing import Annotated, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, Field

from .common import RequestModel, ResponseModel

Username = Annotated[str, Field(min_length=3, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")]
Role = Literal["user", "admin"]


def _password(value: str) -> str:
    size = len(value.encode("utf-8"))
    if size < 8:
        raise ValueError("password must be at least 8 bytes")
    if size > 72:
        raise ValueError("password must be at most 72 bytes of UTF-8 (bcrypt's limit)")
    if "\x00" in value:
        raise ValueError("password must not contain NUL characters")
    return value


def _email(value: str) -> str:
    try:
        checked = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address: {exc}") from None
    return checked.normalized.lower()


Password = Annotated[str, Field(max_length=72), AfterValidator(_password)]
Email = Annotated[str, Field(max_length=254), AfterValidator(_email)]


class RegisterRequest(RequestModel):
    username: Username
    email: Email
    password: Password


class LoginRequest(RequestModel):
    username: str = Field(min_length=1, max_length=254, description="username or email")
    password: str = Field(min_length=1, max_length=1024)


class TokenForm(RequestModel):
    """The OAuth2 password grant, form-encoded."""

    grant_type: Literal["password"] = "password"
    username: str = Field(min_length=1, max_length=254)
    password: str = Field(min_length=1, max_length=1024)
    scope: str = ""
    client_id: str | None = None
    client_secret: str | None = None


class RefreshRequest(RequestModel):
    refresh_token: str = Field(min_length=1, max_length=4096)


class RoleUpdate(RequestModel):
    role: Role


class UserPublic(ResponseModel):
    id: str
    username: str
    email: str
    role: Role
    created_at: str


class Tokens(ResponseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
