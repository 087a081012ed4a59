"""Small, safe HTML building: every value is escaped unless it is already `Html`.

`t("<td>{}</td>", value)` formats a trusted template with escaped arguments; `Html` marks
markup that was built that way (or is a trusted constant). Nothing user- or chain-supplied
reaches a page unescaped: organisation names, endpoints and every event argument come from
the chain, which anyone in the consortium can write to.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import string
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode


class Html(str):
    """Markup that is safe to emit as is."""

    __slots__ = ()

    def __add__(self, other: str) -> Html:
        return Html(str.__add__(self, esc(other)))


def esc(value: Any) -> Html:
    if isinstance(value, Html):
        return value
    return Html(html.escape("" if value is None else str(value), quote=True))


class _EscapingFormatter(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, Html):
            return str(value)
        return html.escape(format(value, format_spec), quote=True)


_FMT = _EscapingFormatter()


def t(template: str, /, *args: Any, **kwargs: Any) -> Html:
    """`template` (trusted markup) with every argument escaped unless it is `Html`."""
    return Html(_FMT.vformat(template, args, kwargs))


def join(parts: Iterable[Any], sep: str = "") -> Html:
    return Html(esc(sep).join(esc(p) for p in parts))


def json_script(element_id: str, data: Any) -> Html:
    """Data for the page's JavaScript, in a non-executed <script type="application/json">."""
    text = json.dumps(data, separators=(",", ":"), default=str)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return t('<script type="application/json" id="{}">', element_id) + Html(text) + Html("</script>")


def url(path: str, **params: Any) -> str:
    query = {k: v for k, v in params.items() if v is not None and v != ""}
    return path + ("?" + urlencode(query) if query else "")


# ---------------------------------------------------------------------------- values


def when(ts: int | float | None, seconds: bool = True) -> Html:
    """A chain timestamp, in UTC, with the unix time in a tooltip."""
    if ts is None:
        return Html('<span class="muted">—</span>')
    try:
        d = dt.datetime.fromtimestamp(float(ts), dt.UTC)
    except (OverflowError, ValueError, OSError):
        return t('<span title="not a representable date">unix time {}</span>', int(ts))
    text = d.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M") + " UTC"
    return t('<time datetime="{}" title="unix time {}">{}</time>', d.isoformat(), int(ts), text)


def when_text(ts: int | float | None) -> str:
    if ts is None:
        return ""
    try:
        return dt.datetime.fromtimestamp(float(ts), dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (OverflowError, ValueError, OSError):
        return f"unix time {int(ts)}"


def short(value: str | None, n: int = 10) -> str:
    if not value:
        return "—"
    return value[:n] + "…" + value[-4:] if len(value) > n + 6 else value


def mono(value: str | None, n: int = 10) -> Html:
    """A hash shown shortened, the full value in a tooltip and selectable."""
    if not value:
        return Html('<span class="muted">—</span>')
    return t('<code class="hash" title="{}">{}</code>', value, short(value, n))


def tx_link(tx: str | None) -> Html:
    if not tx:
        return Html('<span class="muted">—</span>')
    return t('<a class="hash" href="/tx/{}" title="transaction {}">{}</a>', tx, tx, short(tx, 10))


def block_link(block: int | None) -> Html:
    if block is None:
        return Html('<span class="muted">—</span>')
    return t('<span class="block" title="block number">#{}</span>', f"{int(block):,}")


def badge(text: str, tone: str, title: str | None = None) -> Html:
    """A coloured status label: tone is ok, bad, warn, info, run or idle."""
    if title:
        return t('<span class="badge {}" title="{}">{}</span>', tone, title, text)
    return t('<span class="badge {}">{}</span>', tone, text)


def meter(value: float, limit: float, label: str) -> Html:
    """`label` with a bar; red when over the limit, amber from 80 %."""
    if limit <= 0:
        tone = "bad" if value > 0 else "idle"
        return t('<span class="meter-label {}">{}</span>', tone, label)
    ratio = value / limit
    tone = "bad" if ratio > 1 else "warn" if ratio >= 0.8 else "ok"
    return t(
        '<span class="meter-wrap"><meter class="{}" min="0" max="{}" low="{}" high="{}" optimum="0" value="{}"></meter>'
        '<span class="meter-label {}">{}</span></span>',
        tone,
        limit,
        limit * 0.8,
        limit,
        min(value, limit),
        tone,
        label,
    )


def progress(done: int, total: int, label: str) -> Html:
    return t(
        '<span class="progress-wrap"><progress max="{}" value="{}"></progress>'
        '<span class="progress-label">{} {}/{}</span>'
        "</span>",
        max(total, 1),
        min(done, total),
        label,
        done,
        total,
    )


# ---------------------------------------------------------------------------- blocks


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Any]],
    empty: str = "Nothing to show.",
    cls: str = "",
    row_classes: Sequence[str] | None = None,
) -> Html:
    head = join(t("<th>{}</th>", h) for h in headers)
    body_rows = []
    for i, r in enumerate(rows):
        rc = row_classes[i] if row_classes is not None and i < len(row_classes) else ""
        body_rows.append(t('<tr class="{}">{}</tr>', rc, join(t("<td>{}</td>", c) for c in r)))
    if not body_rows:
        return t('<p class="empty">{}</p>', empty)
    return t(
        '<div class="table-wrap"><table class="{}"><thead><tr>{}</tr></thead><tbody>{}</tbody></table></div>',
        cls,
        head,
        join(body_rows),
    )


def dl(items: Iterable[tuple[str, Any]]) -> Html:
    return t('<dl class="facts">{}</dl>', join(t("<dt>{}</dt><dd>{}</dd>", k, v) for k, v in items))


def card(title: str, body: Any, cls: str = "") -> Html:
    return t('<section class="card {}"><h2>{}</h2>{}</section>', cls, title, body)


def select(name: str, options: Iterable[tuple[str, str]], selected: str | None, label: str) -> Html:
    opts = join(
        t('<option value="{}"{}>{}</option>', v, Html(" selected") if str(v) == str(selected or "") else "", text)
        for v, text in options
    )
    return t('<label>{}<select name="{}">{}</select></label>', label, name, opts)


def filters(action: str, controls: Iterable[Html], params: Mapping[str, Any] | None = None) -> Html:
    hidden = join(t('<input type="hidden" name="{}" value="{}">', k, v) for k, v in (params or {}).items())
    return t(
        '<form class="filters" method="get" action="{}">{}{}<button type="submit">Apply</button>'
        ' <a class="reset" href="{}">Clear</a></form>',
        action,
        join(controls),
        hidden,
        action,
    )


def pager(path: str, page: int, per_page: int, total: int, params: Mapping[str, Any]) -> Html:
    pages = max(1, -(-total // per_page))
    if pages <= 1:
        return Html("")
    links = []
    if page > 1:
        links.append(t('<a href="{}">← Newer</a>', url(path, **{**params, "page": page - 1})))
    links.append(t("<span>Page {} of {} ({} in all)</span>", page, pages, total))
    if page < pages:
        links.append(t('<a href="{}">Older →</a>', url(path, **{**params, "page": page + 1})))
    return t('<nav class="pager">{}</nav>', join(links, " "))
