"""The regulator's web dashboard (FastAPI, server-rendered, Sign-In with Ethereum).

- `app`: `create_dashboard_app(store, ledger, ...)`: assembles routers, middleware and error handlers;
- `routers`: the routes by area (pages, JSON API, auth, live status); `deps`: their FastAPI
  dependencies (the dashboard's state, the store, the session guard); `dashboard`: that state;
  `params`: reading page parameters;
- `auth` / `siwe`: EIP-4361 messages, nonces, sessions, rate limits and the sign-in checks;
- `views`: what each page shows, as JSON-ready dicts (also served by the JSON API, checked
  against the response models of `models`);
- `render` / `templates/` / `labels`: the one HTML renderer (autoescaped Jinja2 templates, also
  for the printable audit report), in plain words;
- `live`: the background indexer and anomaly watcher that keep the pages live;
- `static/`: CSS, the pages' JavaScript and Chart.js (served locally, never from a CDN).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pcn.auditor.web.app import create_dashboard_app
    from pcn.auditor.web.siwe import siwe_message

__all__ = ["create_dashboard_app", "siwe_message"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so `pcn.auditor.web.siwe` or `.render` do not pull in FastAPI.
    if name == "create_dashboard_app":
        from pcn.auditor.web.app import create_dashboard_app

        return create_dashboard_app
    if name == "siwe_message":
        from pcn.auditor.web.siwe import siwe_message

        return siwe_message
    raise AttributeError(name)
