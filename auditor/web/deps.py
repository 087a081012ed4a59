"""FastAPI dependencies of the dashboard's routers: its state, the store's read models and
the signed-in regulator's session.

`require_session` guards every page and API route (the routers declare it for all their
routes): without a live session it raises `SignInRequired`, which the app turns into a
redirect to /login (pages) or a 401 (the API).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse

from pcn.auditor.store import Store
from pcn.auditor.web.dashboard import Dashboard
from pcn.auditor.web.render import render
from pcn.auditor.web.siwe import Session
from pcn.auditor.web.views import Views


class SignInRequired(Exception):
    """The request has no live session."""


def get_dashboard(request: Request) -> Dashboard:
    return request.app.state.dashboard


DashboardDep = Annotated[Dashboard, Depends(get_dashboard)]


def get_store(dashboard: DashboardDep) -> Store:
    return dashboard.store


StoreDep = Annotated[Store, Depends(get_store)]


def get_views(dashboard: DashboardDep) -> Views:
    return dashboard.views


ViewsDep = Annotated[Views, Depends(get_views)]


async def require_session(request: Request, dashboard: DashboardDep) -> Session:
    session = await dashboard.session_of(request)
    if session is None:
        raise SignInRequired()
    request.state.session = session  # error pages name who is signed in
    return session


SessionDep = Annotated[Session, Depends(require_session)]


class PageRenderer:
    """Renders a page template inside the layout: navigation, the signed-in regulator, the live status bar."""

    def __init__(self, dashboard: Dashboard, user: str) -> None:
        self.dashboard = dashboard
        self.user = user

    def __call__(
        self,
        template: str,
        title: str,
        active: str = "",
        *,
        charts: bool = False,
        live: bool = True,
        **context: Any,
    ) -> HTMLResponse:
        return HTMLResponse(
            render(
                template,
                title=title,
                user=self.user,
                status=self.dashboard.status(),
                active=active,
                charts=charts,
                live=live,
                **context,
            )
        )


def get_page(dashboard: DashboardDep, session: SessionDep) -> PageRenderer:
    return PageRenderer(dashboard, session.address)


PageDep = Annotated[PageRenderer, Depends(get_page)]
