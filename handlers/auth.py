"""Auth endpoints: register, login, OAuth2 token, refresh, logout."""

from tornado_app.web.openapi import operation
from tornado_app.schemas.users import (LoginRequest, RefreshRequest, RegisterRequest, TokenForm,
                                       Tokens, UserPublic)
from tornado_app.accounts.users import user_public

from .base import BaseHandler


class RegisterHandler(BaseHandler):
    route_name = "auth.register"

    @operation(summary="Register a user", body=RegisterRequest, responses={201: UserPublic}, errors=(409,),
               tag="auth")
    async def post(self) -> None:
        body = self.json_body()
        user = await self.ctx.auth.register(body.username, body.email, body.password,
                                            op_id=self.op_id)
        self.set_header("Location", f"/api/v1/users/{user['_id']}")
        self.send_json(user_public(user), status=201)


class LoginHandler(BaseHandler):
    route_name = "auth.login"

    @operation(summary="Log in with username or email", body=LoginRequest, responses={200: Tokens},
               errors=(401, 429), tag="auth")
    async def post(self) -> None:
        body = self.json_body()
        self.send_json(await self.ctx.auth.login(body.username, body.password))


class TokenHandler(BaseHandler):
    """The OAuth2 password grant (RFC 6749 §4.3), for tools such as the /docs "Authorize"."""

    route_name = "auth.token"

    @operation(summary="OAuth2 password grant (form-encoded)", body=TokenForm, form=True,
               responses={200: Tokens}, errors=(401, 429), tag="auth")
    async def post(self) -> None:
        form = self.form_body()
        self.send_json(await self.ctx.auth.login(form.username, form.password))


class RefreshHandler(BaseHandler):
    route_name = "auth.refresh"

    @operation(summary="Rotate a refresh token", body=RefreshRequest, responses={200: Tokens}, errors=(401,),
               tag="auth")
    async def post(self) -> None:
        body = self.json_body()
        self.send_json(await self.ctx.auth.refresh(body.refresh_token, op_id=self.op_id))


class LogoutHandler(BaseHandler):
    route_name = "auth.logout"

    @operation(summary="Revoke this login's tokens", responses={204: None}, auth="bearer", tag="auth")
    async def post(self) -> None:
        self.no_body()
        await self.ctx.auth.logout(self.token_family)
        self.send_empty()
