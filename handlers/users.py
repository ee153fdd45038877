"""User endpoints: me, and the admin's list and role changes."""

from tornado_app.web.openapi import operation
from tornado_app.schemas.common import Page, PageQuery
from tornado_app.schemas.users import RoleUpdate, UserPublic
from tornado_app.accounts.users import user_public

from .base import BaseHandler


class MeHandler(BaseHandler):
    route_name = "users.me"

    @operation(summary="The current user", responses={200: UserPublic}, auth="bearer", tag="users")
    async def get(self) -> None:
        self.send_json(user_public(self.user))


class UsersHandler(BaseHandler):
    route_name = "users.list"

    @operation(summary="List users", query=PageQuery, responses={200: Page[UserPublic]}, auth="admin",
               tag="users")
    async def get(self) -> None:
        params = self.query()
        page = await self.ctx.users.list(params.limit, params.cursor)
        self.send_json(page.to_json(user_public))


class UserHandler(BaseHandler):
    route_name = "users.item"

    @operation(summary="Change a user's role", body=RoleUpdate, responses={200: UserPublic}, auth="admin",
               tag="users")
    async def patch(self, user_id: str) -> None:
        body = self.json_body()
        self.send_json(user_public(await self.ctx.users.set_role(user_id, body.role)))
