"""The dashboard's one HTML renderer: Jinja2 templates (package data under `templates/`),
autoescaped everywhere, for the pages, the sign-in page and the HTML audit report.

Nothing user- or chain-supplied reaches a page unescaped: organisation names, endpoints and
every event argument come from the chain, which anyone in the consortium can write to.
Templates mark nothing `|safe`; markup comes only from the templates and their macros.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined

from pcn.auditor import labels, reports

FORMATS = ("json", "csv", "html")

NAV = (
    ("/", "Overview"),
    ("/orgs", "Organisations"),
    ("/datasets", "Datasets"),
    ("/algorithms", "Algorithms"),
    ("/tasks", "Tasks"),
    ("/anomalies", "Anomalies"),
    ("/reports", "Reports"),
)


@dataclass(frozen=True)
class Moment:
    iso: str
    unix: int
    text: str


def moment(ts: float, seconds: bool = True) -> Moment | None:
    """A chain timestamp as UTC text, or None when no date can represent it."""
    try:
        d = dt.datetime.fromtimestamp(float(ts), dt.UTC)
    except (OverflowError, ValueError, OSError):
        return None
    return Moment(d.isoformat(), int(ts), d.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M") + " UTC")


def short(value: str | None, n: int = 10) -> str:
    if not value:
        return "—"
    return value[:n] + "…" + value[-4:] if len(value) > n + 6 else value


def url(path: str, **params: Any) -> str:
    query = {k: v for k, v in params.items() if v is not None and v != ""}
    return path + ("?" + urlencode(query) if query else "")


def _pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


ENV = Environment(
    loader=PackageLoader("pcn.auditor.web", "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    extensions=["jinja2.ext.do"],
)
ENV.policies["json.dumps_kwargs"] = {"separators": (",", ":")}  # chart data, as compact as before
ENV.filters.update(
    short=short,
    thousands=lambda n: f"{int(n):,}",
    g=lambda x: f"{x:g}",
    pretty_json=_pretty_json,
)
ENV.globals.update(labels=labels, moment=moment, url=url, NAV=NAV, enumerate=enumerate, zip=zip)


def render(template: str, **context: Any) -> str:
    return ENV.get_template(template).render(**context)


def report_html(report: dict[str, Any]) -> str:
    """The audit report as one printable HTML page."""
    return render("report.html", report=report) + "\n"


def render_report(report: dict[str, Any], fmt: str) -> str:
    """The report as JSON, CSV or a printable HTML page."""
    if fmt == "json":
        return reports.report_json(report)
    if fmt == "csv":
        return reports.report_csv(report)
    if fmt == "html":
        return report_html(report)
    raise reports.ReportError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
