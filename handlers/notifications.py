"""Notification endpoints."""

from tornado_app.notifications.store import notification_accepted, notification_public
from tornado_app.web.openapi import operation
from tornado_app.schemas.common import Page, PageQuery
from tornado_app.schemas.notifications import (NotificationAccepted, NotificationCreate,
                                               NotificationPublic)

from .base import BaseHandler


class NotificationsHandler(BaseHandler):
    route_name = "notifications.list"

    @operation(summary="Queue a notification for a user", body=NotificationCreate,
               responses={202: NotificationAccepted}, auth="admin", tag="notifications")
    async def post(self) -> None:
        body = self.json_body()
        doc = await self.ctx.notifications.create(body.user_id, body.title, body.body,
                                                  op_id=self.op_id)
        self.set_header("Location", f"/api/v1/notifications/{doc['_id']}")
        self.send_json(notification_accepted(doc), status=202)

    @operation(summary="My notifications, newest first", query=PageQuery,
               responses={200: Page[NotificationPublic]}, auth="bearer", tag="notifications")
    async def get(self) -> None:
        params = self.query()
        page = await self.ctx.notifications.list_for(self.user, params.limit, params.cursor)
        self.send_json(page.to_json(notification_public))


class NotificationHandler(BaseHandler):
    route_name = "notifications.item"

    @operation(summary="A notification (recipient or admin)",
               responses={200: NotificationPublic}, auth="bearer", tag="notifications")
    async def get(self, notification_id: str) -> None:
        self.send_json(notification_public(
            await self.ctx.notifications.get_for(self.user, notification_id)))


class NotificationReadHandler(BaseHandler):
    route_name = "notifications.read"

    @operation(summary="Mark a notification read (recipient)",
               responses={200: NotificationPublic}, auth="bearer", tag="notifications")
    async def post(self, notification_id: str) -> None:
        self.no_body()
        self.send_json(notification_public(
            await self.ctx.notifications.mark_read(self.user, notification_id)))
