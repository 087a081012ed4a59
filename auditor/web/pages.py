"""The dashboard's HTML pages, rendered on the server from the dicts of `views`.

Each page function returns the `<main>` content; `layout` wraps it with the navigation and
the live status bar. Scripts are external files only (the Content-Security-Policy allows
no inline script); chart data travels in `<script type="application/json">` blocks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pcn.auditor.web import labels
from pcn.auditor.web.html import (
    Html,
    badge,
    block_link,
    card,
    dl,
    filters,
    join,
    json_script,
    meter,
    mono,
    pager,
    progress,
    select,
    short,
    t,
    table,
    tx_link,
    url,
    when,
)

NAV = (
    ("/", "Overview"),
    ("/orgs", "Organisations"),
    ("/datasets", "Datasets"),
    ("/algorithms", "Algorithms"),
    ("/tasks", "Tasks"),
    ("/anomalies", "Anomalies"),
    ("/reports", "Reports"),
)


def org_link(ref: dict[str, Any] | None) -> Html:
    if not ref:
        return Html('<span class="muted">—</span>')
    if not ref.get("member"):
        return t('<code class="hash" title="{}">{}</code>', ref["account"], short(ref["account"], 10))
    return t('<a href="/orgs/{}" title="{}">{}</a>', ref["account"], ref["account"], ref["name"])


def task_link(task_id: int | None) -> Html:
    if task_id is None:
        return Html('<span class="muted">—</span>')
    return t('<a href="/tasks/{}">Task {}</a>', task_id, task_id)


def dataset_link(dataset_id: int | None) -> Html:
    if dataset_id is None:
        return Html('<span class="muted">—</span>')
    return t('<a href="/datasets/{}">Dataset {}</a>', dataset_id, dataset_id)


def status_badge(status: dict[str, Any] | None) -> Html:
    if not status:
        return Html('<span class="muted">—</span>')
    return badge(status["label"], status["tone"], status.get("help"))


def algo_text(a: dict[str, Any] | None) -> Html:
    if not a or not a.get("hash"):
        return Html('<span class="muted">—</span>')
    if a.get("kind"):
        return t(
            '<span title="code hash {}">{} <span class="muted">v{}</span></span>',
            a["hash"],
            labels.algorithm_kind(a["kind"]),
            a.get("version") or "?",
        )
    return t('<span class="bad-text" title="not a registered algorithm">unregistered {}</span>', mono(a["hash"]))


def verdict_badge(v: dict[str, Any] | None) -> Html:
    if not v:
        return Html('<span class="muted">—</span>')
    return badge(v["label"], v["tone"], v.get("help"))


def progress_cell(p: dict[str, list[int]]) -> Html:
    dropped = p.get("dropped", [0, 0])[0]
    return join(
        [
            progress(p["approvals"][0], p["approvals"][1], "approved"),
            progress(p["started"][0], p["started"][1], "started"),
            progress(p["receipts"][0], p["receipts"][1], "receipts"),
            t(
                '<span class="progress-label warn-text" title="reported dropped out by the result recipient: '
                'no receipt due">{} dropped out</span>',
                dropped,
            )
            if dropped
            else Html(""),
        ]
    )


# ---------------------------------------------------------------------------- layout


def layout(
    title: str,
    content: Html,
    *,
    user: str | None,
    status: dict[str, Any],
    active: str = "",
    charts: bool = False,
    live: bool = True,
) -> str:
    nav = join(
        t('<a href="{}"{}>{}</a>', href, Html(' class="active" aria-current="page"') if href == active else "", label)
        for href, label in NAV
    )
    who = (
        t(
            '<div class="who"><span title="{}">Signed in as <b>{}</b></span>'
            '<form method="post" action="/auth/logout">'
            '<button type="submit" class="link">Sign out</button></form></div>',
            user,
            short(user, 8),
        )
        if user
        else Html("")
    )
    scripts = Html('<script src="/static/vendor/chart.umd.js" defer></script>') if charts else Html("")
    scripts += Html('<script src="/static/app.js" defer></script>')
    return str(
        t(
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            "<title>{} · pcn audit</title>"
            '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
            '<link rel="stylesheet" href="/static/app.css">{}</head>'
            '<body data-stamp="{}" data-live="{}">'
            '<header class="top"><a class="brand" href="/">pcn <span>audit</span></a><nav>{}</nav>{}</header>'
            '<div class="statusbar" id="statusbar">{}</div>'
            '<main id="main">{}</main>'
            "<footer>Every figure on these pages is read from the blockchain and re-checked by the auditor; "
            "times are the chain's own clock, in UTC.</footer>"
            "</body></html>",
            title,
            scripts,
            status.get("stamp", ""),
            "1" if live else "0",
            nav,
            who,
            statusbar(status),
            content,
        )
    )


def statusbar(status: dict[str, Any]) -> Html:
    if status.get("indexed_block") is None:
        return Html('<span class="dot idle"></span> Nothing indexed yet: waiting for the indexer.')
    return t(
        '<span class="dot live" title="the page refreshes itself when the chain moves"></span> '
        "Chain {}: indexed up to block <b>#{}</b> ({}). {} events · {} open tasks · {} open anomalies. "
        '<span class="muted" id="live-note"></span>',
        status.get("chain_id"),
        f"{status['indexed_block']:,}",
        when(status.get("indexed_at")),
        f"{status.get('events', 0):,}",
        status.get("open_tasks", 0),
        status.get("open_anomalies", 0),
    )


def page_head(title: str, lead: str | Html = "", extra: Html | str = "") -> Html:
    return t(
        '<div class="page-head"><h1>{}</h1>{}</div>{}', title, extra, t('<p class="lead">{}</p>', lead) if lead else ""
    )


# ---------------------------------------------------------------------------- overview


def _chart(chart_id: str, title: str, kind: str, data: dict[str, Any], help_text: str) -> Html:
    body = t(
        '<p class="muted small">{}</p>'
        '<div class="chart-box"><canvas id="{}" role="img" aria-label="{}"></canvas></div>{}',
        help_text,
        chart_id,
        title,
        json_script(chart_id + "-data", {"type": kind, **data}),
    )
    return card(title, body, "chart")


def overview(v: dict[str, Any]) -> Html:
    c = v["counts"]
    tiles = [
        (
            "/orgs",
            "Organisations",
            c["organisations"],
            f"{c['organisations_active']} active, {c['organisations_suspended']} suspended",
            "bad" if c["organisations_suspended"] else "",
        ),
        (
            "/datasets",
            "Datasets",
            c["datasets"],
            f"{c['datasets_near_limit']} near or over a limit",
            "warn" if c["datasets_near_limit"] else "",
        ),
        ("/algorithms", "Algorithms", c["algorithms"], f"{c['algorithms_deprecated']} withdrawn", ""),
        ("/tasks", "Tasks", c["tasks"], f"{c['tasks_open']} in progress", ""),
        (
            "/anomalies?kind=refusal&state=all",
            "Refusals",
            c["refusals"],
            "participants that refused a task",
            "warn" if c["refusals"] else "",
        ),
        (
            "/anomalies",
            "Open anomalies",
            c["anomalies_open"],
            f"{c['anomalies_resolved']} resolved",
            "bad" if c["anomalies_open"] else "ok",
        ),
    ]
    tiles_html = join(
        t(
            '<a class="tile {}" href="{}"><span class="tile-n" data-count="{}">{}</span>'
            '<span class="tile-t">{}</span><span class="tile-s">{}</span></a>',
            tone,
            href,
            label,
            n,
            label,
            sub,
        )
        for href, label, n, sub, tone in tiles
    )
    by_status = join(
        t(
            '<a class="chip" href="{}">{} <b>{}</b></a>',
            url("/tasks", status=s["key"]),
            badge(s["label"], s["tone"], s["help"]),
            s["count"],
        )
        for s in v["tasks_by_status"]
    )
    by_sev = join(
        t(
            '<a class="chip" href="{}">{} <b>{}</b></a>',
            url("/anomalies", severity=s["severity"]),
            badge(s["label"], s["tone"]),
            s["count"],
        )
        for s in v["anomalies_by_severity"]
    )
    ch = v["charts"]
    charts = join(
        [
            _chart(
                "chart-tasks",
                "Tasks over time",
                "bar",
                ch["tasks"],
                "Tasks submitted in each period, coloured by how they ended.",
            ),
            _chart(
                "chart-refusals",
                "Refusals over time",
                "bar",
                ch["refusals"],
                "Times a participant refused to run a task, by reason.",
            ),
            _chart(
                "chart-anomalies",
                "Anomalies over time",
                "bar",
                ch["anomalies"],
                "Problems the auditor found, by when they happened and how serious they are.",
            ),
        ]
    )
    open_rows = [
        (
            task_link(x["id"]),
            status_badge(x["status"]),
            org_link(x["requester"]),
            algo_text(x["algorithm"]),
            progress_cell(x["progress"]),
            when(x["submitted_at"]),
        )
        for x in v["open_tasks"]
    ]
    running = card(
        "Tasks in progress",
        table(
            ("Task", "Status", "Requested by", "Algorithm", "Progress", "Submitted"),
            open_rows,
            "No task is in progress.",
        ),
    )
    anomalies = card(
        "Most serious open anomalies",
        anomaly_table(v["recent_anomalies"], compact=True) + t('<p><a href="/anomalies">All anomalies →</a></p>'),
    )
    events = card(
        "Latest activity on chain",
        table(
            ("When", "Block", "What happened", "Transaction"),
            ((when(e["time"]), block_link(e["block"]), event_cell(e), tx_link(e["tx"])) for e in v["recent_events"]),
            "Nothing has happened on chain yet.",
        ),
    )
    return join(
        [
            page_head("Overview", "Everything the consortium did with its data, as recorded on the blockchain."),
            t('<div class="tiles">{}</div>', tiles_html),
            t('<div class="chips"><span class="chips-t">Tasks by status</span>{}</div>', by_status),
            t('<div class="chips"><span class="chips-t">Open anomalies by severity</span>{}</div>', by_sev),
            t('<div class="grid3">{}</div>', charts),
            t('<div class="grid2">{}{}</div>', running, anomalies),
            events,
        ]
    )


def event_cell(e: dict[str, Any]) -> Html:
    links = []
    if e.get("task_id") is not None:
        links.append(task_link(e["task_id"]))
    if e.get("dataset_id") is not None:
        links.append(dataset_link(e["dataset_id"]))
    extra = t(' <span class="links">{}</span>', join(links, " · ")) if links else Html("")
    cls = f"ev {e['tone']}" if e.get("tone") else "ev"
    return t('<span class="{}">{}</span>{}', cls, e["text"], extra)


# ---------------------------------------------------------------------------- organisations


def orgs(items: list[dict[str, Any]]) -> Html:
    rows = [
        (
            t('<a href="/orgs/{}"><b>{}</b></a><br>{}', o["account"], o["name"], mono(o["account"], 12)),
            badge(o["status_label"], o["status_tone"]),
            t("{}<br>{}", when(o["admitted_at"]), tx_link(o["admitted_tx"])),
            o["status_changes"],
            t('<a href="{}">{}</a>', url("/datasets"), o["datasets"]),
            t(
                '<a href="{}">{}</a> / {}',
                url("/tasks", org=o["account"]),
                o["tasks_requested"],
                o["tasks_participated"],
            ),
            o["refusals"],
            t('<a href="{}">{}</a>', url("/anomalies", org=o["account"]), o["open_anomalies"])
            if o["open_anomalies"]
            else "0",
        )
        for o in items
    ]
    return join(
        [
            page_head("Organisations", "Members of the consortium, their standing and what they did."),
            table(
                (
                    "Organisation",
                    "Status",
                    "Admitted",
                    "Status changes",
                    "Datasets",
                    "Tasks requested / took part",
                    "Refusals",
                    "Open anomalies",
                ),
                rows,
                "No organisation has been admitted yet.",
            ),
        ]
    )


def org(o: dict[str, Any]) -> Html:
    facts = dl(
        [
            ("Account", t("<code>{}</code>", o["account"])),
            ("Status", badge(o["status_label"], o["status_tone"])),
            ("Node endpoint", t("<code>{}</code>", o["endpoint"])),
            ("Encryption key", mono(o["encryption_key"], 18)),
            (
                "Admitted",
                t(
                    "{} · block {} · {}",
                    when(o["admitted_at"]),
                    block_link(o["admitted_block"]),
                    tx_link(o["admitted_tx"]),
                ),
            ),
            ("Tasks", t('<a href="{}">{} task(s)</a>', url("/tasks", org=o["account"]), o["task_count"])),
        ]
    )
    history = table(
        ("When", "Block", "Change", "Status after", "By", "Transaction"),
        (
            (
                when(h["time"]),
                block_link(h["block"]),
                h["label"],
                badge(h["status_label"], h["status_tone"]),
                org_link(h["by"]),
                tx_link(h["tx"]),
            )
            for h in o["history"]
        ),
        "No status change recorded.",
    )
    profile = table(
        ("When", "Block", "Change", "Transaction"),
        ((when(e["time"]), block_link(e["block"]), e["text"], tx_link(e["tx"])) for e in o["profile_changes"]),
        "The endpoint and encryption key were never changed.",
    )
    roles = table(
        ("When", "Role", "Change", "By", "Transaction"),
        (
            (when(r["time"]), r["role"], "granted" if r["granted"] else "revoked", org_link(r["by"]), tx_link(r["tx"]))
            for r in o["roles"]
        ),
        "No special role (admin, auditor).",
    )
    datasets = dataset_table(o["datasets"], owner=False)
    tasks = task_table(o["tasks"])
    checks = table(
        ("Checked", "Result", "Entries", "Head entry", "Against block", "Problems"),
        (
            (
                when(c["checked_at"]),
                badge("Matches the chain", "ok") if c["ok"] else badge("Disagrees with the chain", "bad"),
                c["entries"],
                c["head_seq"],
                block_link(c["indexed_block"]),
                join(
                    t(
                        "<div>{}: {}</div>",
                        labels.LOG_PROBLEM.get(str(p.get("kind")), p.get("kind")),
                        p.get("message"),
                    )
                    for p in (c["problems"] or [])[:8]
                ),
            )
            for c in o["log_checks"]
        ),
        "This organisation's local log has not been checked yet (pcn audit verify-log).",
    )
    anchors = table(
        ("Entry", "Head hash", "When", "Transaction"),
        ((a["sequence"], mono(a["head_hash"], 14), when(a["time"]), tx_link(a["tx"])) for a in o["anchors"]),
        "No log anchor on chain.",
    )
    return join(
        [
            page_head(o["name"], "An organisation of the consortium.", badge(o["status_label"], o["status_tone"])),
            card("About", facts),
            card("Membership history", history),
            card("Open anomalies and history", anomaly_table(o["anomalies"])),
            card("Datasets owned", datasets),
            card("Tasks it requested or took part in", tasks),
            t(
                '<div class="grid2">{}{}</div>',
                card("Local action log checks", checks),
                card("Log anchors on chain (latest 20)", anchors),
            ),
            t('<div class="grid2">{}{}</div>', card("Endpoint and key changes", profile), card("Roles", roles)),
        ]
    )


# ---------------------------------------------------------------------------- datasets


def _uses(d: dict[str, Any]) -> Html:
    return meter(d["uses"], d["max_uses"], f"{d['uses']} of {d['max_uses']} uses")


def _budget(d: dict[str, Any]) -> Html:
    return meter(d["epsilon_spent"], d["epsilon_total"], f"ε {d['epsilon_spent']:g} of {d['epsilon_total']:g}")


def _expiry(d: dict[str, Any]) -> Html:
    return Html("never expires") if d["expiry_never"] else when(d["expiry"])


def dataset_table(items: list[dict[str, Any]], owner: bool = True) -> Html:
    headers = [
        "Dataset",
        *(["Owner"] if owner else []),
        "Version",
        "Uses vs quota",
        "Privacy budget (ε)",
        "Policy valid until",
    ]
    rows = []
    for d in items:
        row: list[Any] = [dataset_link(d["id"])]
        if owner:
            row.append(org_link(d.get("owner_ref")))
        row += [t("v{}", d["version"]), _uses(d), _budget(d), _expiry(d)]
        if "tasks" in d:
            row += [d["tasks"], when(d.get("last_used_at"))]
        rows.append(row)
    if items and "tasks" in items[0]:
        headers += ["Tasks", "Last used"]
    return table(headers, rows, "No dataset registered.")


def datasets(items: list[dict[str, Any]]) -> Html:
    return join(
        [
            page_head(
                "Datasets",
                "Registered datasets (only their fingerprints are on chain, never the data), how much of their "
                "usage quota and privacy budget has been spent.",
            ),
            dataset_table(items),
        ]
    )


def dataset(d: dict[str, Any]) -> Html:
    facts = dl(
        [
            ("Owner", org_link(d["owner_ref"])),
            ("Current version", t("v{}", d["version"])),
            ("Uses", _uses(d)),
            ("Privacy budget", _budget(d)),
            ("Policy valid until", _expiry(d)),
            ("Registered", t("{} · {}", when(d["registered_at"]), tx_link(d["registered_tx"]))),
            (
                "Allowed algorithms",
                join((algo_text(a) for a in d["allowed"]["algorithm"]), ", ")
                or Html('<span class="muted">none</span>'),
            ),
            (
                "Allowed requesters",
                join((org_link(r) for r in d["allowed"]["requester"]), ", ") or Html('<span class="muted">none</span>'),
            ),
            (
                "Allowed result recipients",
                join((org_link(r) for r in d["allowed"]["recipient"]), ", ") or Html('<span class="muted">none</span>'),
            ),
        ]
    )
    usage = table(
        (
            "When",
            "Task",
            "Requested by",
            "Result to",
            "Algorithm",
            "Use",
            "ε of the task",
            "ε spent after",
            "Task status",
            "Transaction",
        ),
        (
            (
                when(u["time"]),
                task_link(u["task_id"]),
                org_link(u["requester"]),
                org_link(u["recipient"]),
                algo_text(u["algorithm"]),
                t("{} of {}", u["use"], u["max_uses"]),
                f"{u['epsilon']:g}",
                f"{u['epsilon_spent_after']:g} of {d['epsilon_total']:g}",
                status_badge(u["status"]),
                tx_link(u["tx"]),
            )
            for u in d["usage"]
        ),
        "This dataset has not been used by any task.",
    )
    others = table(
        ("Task", "Pinned version", "Status", "Submitted"),
        (
            (task_link(x["task_id"]), t("v{}", x["version"]), status_badge(x["status"]), when(x["submitted_at"]))
            for x in d["other_tasks"]
        ),
        "None.",
    )
    versions = table(
        ("Version", "Fingerprint (Merkle root)", "Schema hash", "Rows", "Published", "Transaction"),
        (
            (
                t("v{}", v["version"]),
                mono(v["merkle_root"], 18),
                mono(v["schema_hash"], 12),
                f"{v['row_count']:,}",
                when(v["time"]),
                tx_link(v["tx"]),
            )
            for v in d["versions"]
        ),
    )
    policy = table(
        ("When", "Block", "Change", "Transaction"),
        ((when(p["time"]), block_link(p["block"]), p["what"], tx_link(p["tx"])) for p in d["policy_history"]),
        "No policy set.",
    )
    return join(
        [
            page_head(f"Dataset {d['id']}", t("Owned by {}.", org_link(d["owner_ref"]))),
            card("Policy and consumption", facts),
            card("Who used it, when, and for what", usage),
            card("Tasks that named it but did not use it (not authorised, cancelled…)", others),
            card("Anomalies", anomaly_table(d["anomalies"])),
            t('<div class="grid2">{}{}</div>', card("Fingerprint versions", versions), card("Policy history", policy)),
        ]
    )


# ---------------------------------------------------------------------------- algorithms


def algorithms(items: list[dict[str, Any]]) -> Html:
    rows = [
        (
            t("<b>{}</b><br>{}", a["kind_label"], mono(a["code_hash"], 14)),
            a["version"],
            badge("Withdrawn", "idle", "deprecated: new tasks may not use it")
            if a["deprecated"]
            else badge("In use", "ok"),
            org_link(a["publisher"]),
            t("{}<br>{}", when(a["registered_at"]), tx_link(a["registered_tx"])),
            t('<a href="{}">{}</a>', url("/tasks", algorithm=a["code_hash"]), a["tasks"]),
            join((dataset_link(i) for i in a["allowed_for_datasets"]), ", ") or Html('<span class="muted">none</span>'),
        )
        for a in items
    ]
    return join(
        [
            page_head(
                "Algorithms",
                "Each algorithm is registered by the hash of its exact code; "
                "nodes refuse to run code whose hash differs.",
            ),
            table(
                ("Algorithm", "Version", "Status", "Published by", "Registered", "Tasks", "Approved for datasets"),
                rows,
                "No algorithm registered.",
            ),
        ]
    )


# ---------------------------------------------------------------------------- tasks


def task_table(items: list[dict[str, Any]]) -> Html:
    rows = [
        (
            task_link(x["id"]),
            status_badge(x["status"]),
            verdict_badge(x.get("verdict")) if "verdict" in x else "",
            org_link(x["requester"]),
            algo_text(x["algorithm"]),
            join((dataset_link(i) for i in x["datasets"]), ", "),
            progress_cell(x["progress"]),
            when(x["submitted_at"]),
        )
        for x in items
    ]
    return table(
        ("Task", "Status", "Verification", "Requested by", "Algorithm", "Datasets", "Progress", "Submitted"),
        rows,
        "No task.",
    )


def tasks(
    v: dict[str, Any],
    params: dict[str, Any],
    org_choices: Sequence[tuple[str, str]],
    dataset_choices: Sequence[tuple[str, str]],
) -> Html:
    statuses = [("", "Any status")] + [(k, labels.TASK_STATUS[c][0]) for k, c in labels.TASK_STATUS_KEYS.items()]
    form = filters(
        "/tasks",
        [
            select("status", statuses, params.get("status"), "Status"),
            select("org", [("", "Any organisation"), *org_choices], params.get("org"), "Organisation"),
            select("dataset", [("", "Any dataset"), *dataset_choices], params.get("dataset"), "Dataset"),
        ],
        {"algorithm": params["algorithm"]} if params.get("algorithm") else None,
    )
    return join(
        [
            page_head(
                "Tasks", "Every computation requested on the network, newest first, with the auditor's own verdict."
            ),
            form,
            task_table(v["items"]),
            pager(
                "/tasks", v["page"], v["per_page"], v["total"], {k: p for k, p in params.items() if p and k != "page"}
            ),
        ]
    )


def task(x: dict[str, Any]) -> Html:
    v = x["verdict"]
    deadline_note = (
        badge("deadline passed", "warn") if x["past_deadline"] and x["status"]["tone"] in ("run", "info") else ""
    )
    facts = dl(
        [
            ("Status", t('{} <span class="muted">{}</span>', status_badge(x["status"]), x["status"]["help"])),
            ("Requested by", org_link(x["requester"])),
            ("Result goes to", org_link(x["recipient"])),
            ("Algorithm", algo_text(x["algorithm"])),
            (
                "Datasets",
                join(
                    (
                        t("{} (v{}, owner {})", dataset_link(d["id"]), d["version"], org_link(d["owner"]))
                        for d in x["dataset_refs"]
                    ),
                    "; ",
                ),
            ),
            ("Privacy budget asked (ε)", f"{x['epsilon']:g}"),
            ("Deadline", t("{} {}", when(x["deadline"]), deadline_note)),
            ("Submitted", t("{} · {}", when(x["submitted_at"]), tx_link(x["submit_tx"]))),
            ("Parameters hash", mono(x["params_hash"], 18)),
            ("Agreed result hash", mono(x["result_hash"], 18)),
        ]
    )
    prog = t('<div class="progress-big" id="task-progress">{}</div>', progress_cell(x["progress"]))
    parts = table(
        ("Participant", "State", "Approved", "Started", "Receipt / refusal / dropout"),
        (
            (
                org_link(p),
                badge(p["state_label"], p["state_tone"]),
                t("{} {}", when(p["approved_at"]), tx_link(p["approval_tx"]))
                if p["approved_at"]
                else Html('<span class="muted">— (owns no input)</span>'),
                t("{} {}", when(p["started_at"]), tx_link(p["start_tx"]))
                if p["started_at"]
                else Html('<span class="muted">not yet</span>'),
                (
                    t(
                        "result {} · deletion proof {} · {}",
                        mono(p["receipt"]["result_hash"]),
                        mono(p["receipt"]["deletion_hash"]),
                        tx_link(p["receipt"]["tx"]),
                    )
                    if p["receipt"]
                    else t('<span class="warn-text">{}</span> {}', p["refusal"]["reason"], tx_link(p["refusal"]["tx"]))
                    if p["refusal"]
                    else t(
                        '<span class="warn-text">stopped answering; reported dropped out by {}, no receipt due</span>'
                        " · {} {} {}",
                        org_link(p["dropout"]["reported_by"]),
                        when(p["dropout"]["time"]),
                        block_link(p["dropout"]["block"]),
                        tx_link(p["dropout"]["tx"]),
                    )
                    if p.get("dropout")
                    else Html('<span class="muted">—</span>')
                ),
            )
            for p in x["participant_list"]
        ),
    )
    timeline = table(
        ("#", "When (UTC)", "Block", "Step", "By", "Transaction"),
        (
            (
                i + 1,
                when(e["time"]),
                block_link(e["block"]),
                t('<span class="ev {}">{}</span>', e["tone"], e["text"]),
                org_link(e["actor"] or e["sender"]),
                tx_link(e["tx"]),
            )
            for i, e in enumerate(x["timeline"])
        ),
        "No step recorded yet.",
        cls="timeline",
    )
    if v:
        checks = table(
            ("Check", "Result", "What the auditor found", "Evidence"),
            (
                (
                    t('<span title="{}">{}</span>', c["name"], c["label"]),
                    badge(c["status_label"], c["tone"]),
                    c["text"],
                    join((tx_link(h) for h in dict.fromkeys(c["tx_hashes"]) if h), " ")
                    or Html('<span class="muted">—</span>'),
                )
                for c in v["checks"]
            ),
            cls="checks",
            row_classes=[f"check-{c['status']}" for c in v["checks"]],
        )
        verdict = t(
            '<div class="verdict {}" id="verdict"><span class="verdict-label">{}</span><span>{}</span>'
            '<span class="muted small">As of block {}.</span></div>{}',
            v["tone"],
            v["label"],
            v["help"],
            v["as_of_block"],
            checks,
        )
    else:
        verdict = Html("<p>Not verified.</p>")
    return join(
        [
            page_head(f"Task {x['id']}", "", status_badge(x["status"])),
            t('<div class="grid2">{}{}</div>', card("The request", facts), card("Progress", prog + parts)),
            card("Timeline: every step recorded on chain", timeline),
            card("Independent re-verification", verdict),
            card("Anomalies", anomaly_table(x["anomalies"])),
        ]
    )


# ---------------------------------------------------------------------------- anomalies


def anomaly_table(items: Iterable[dict[str, Any]], compact: bool = False) -> Html:
    rows: list[tuple[Html, ...]] = []
    for a in items:
        links = [
            task_link(a["task_id"]) if a["task_id"] is not None else None,
            dataset_link(a["dataset_id"]) if a["dataset_id"] is not None else None,
            org_link(a["org"]) if a["org"] else None,
        ]
        link_html = join((x for x in links if x is not None), " · ") or Html('<span class="muted">—</span>')
        txs = join((tx_link(h) for h in a["tx_hashes"][:4]), " ")
        state = (
            Html("")
            if a["open"]
            else t('<br>{} <span class="muted small">{}</span>', badge("Resolved", "ok"), when(a["resolved_at"]))
        )
        if compact:
            rows.append(
                (
                    badge(a["severity_label"], a["severity_tone"]),
                    t("<b>{}</b><br>{}", a["kind_label"], a["text"]),
                    link_html,
                )
            )
        else:
            rows.append(
                (
                    t("{}{}", badge(a["severity_label"], a["severity_tone"]), state),
                    t(
                        '<b title="{}">{}</b><br><span class="small">{}</span>',
                        a.get("kind_help") or a["kind_label"],
                        a["kind_label"],
                        a["text"],
                    ),
                    t("{}<br>{}", when(a["occurred_at"]), block_link(a["block_number"])),
                    link_html,
                    txs or Html('<span class="muted">—</span>'),
                )
            )
    if compact:
        return table(("Severity", "What", "Concerns"), rows, "No open anomaly.", cls="anomalies")
    return table(("Severity", "What", "When", "Concerns", "Transactions"), rows, "No anomaly.", cls="anomalies")


def anomaly_kinds_help() -> Html:
    """What each kind of anomaly means, in plain words (folded away by default)."""
    return t(
        '<details class="kinds-help"><summary>What each kind of anomaly means</summary><dl>{}</dl></details>',
        join(
            t("<dt>{}</dt><dd>{}</dd>", labels.anomaly_kind(kind), labels.anomaly_help(kind))
            for kind in labels.ANOMALY_KIND
        ),
    )


def anomalies(v: dict[str, Any], params: dict[str, Any], org_choices: Sequence[tuple[str, str]]) -> Html:
    kinds = [("", "Any kind")] + [(k["kind"], k["label"]) for k in v["kinds"]]
    known = {k for k, _ in kinds}
    kinds += [(k, labels.anomaly_kind(k)) for k in labels.ANOMALY_KIND if k not in known]
    chosen = str(params.get("kind") or "")
    form = filters(
        "/anomalies",
        [
            select("kind", kinds, params.get("kind"), "Kind"),
            select(
                "severity",
                [("", "Any severity")] + [(s, labels.SEVERITY[s][0]) for s in labels.SEVERITY_ORDER],
                params.get("severity"),
                "Severity",
            ),
            select(
                "state",
                [("open", "Open"), ("resolved", "Resolved"), ("all", "Open and resolved")],
                params.get("state") or "open",
                "Show",
            ),
            select("org", [("", "Any organisation"), *org_choices], params.get("org"), "Organisation"),
        ],
        {k: params[k] for k in ("task", "dataset") if params.get(k) not in (None, "")},
    )
    return join(
        [
            page_head(
                "Anomalies",
                "What the auditor found wrong or worth a look: refusals, disagreeing results, late or missing steps, "
                "participants that dropped out mid-computation, data changed under a live policy, quotas and "
                "privacy budgets, suspended members, local logs that disagree with the chain.",
            ),
            form,
            t('<p class="kind-help"><b>{}</b>: {}</p>', labels.anomaly_kind(chosen), labels.anomaly_help(chosen))
            if chosen and labels.anomaly_help(chosen)
            else Html(""),
            anomaly_kinds_help(),
            anomaly_table(v["items"]),
            pager(
                "/anomalies",
                v["page"],
                v["per_page"],
                v["total"],
                {k: p for k, p in params.items() if p and k != "page"},
            ),
        ]
    )


# ---------------------------------------------------------------------------- transactions


def tx(x: dict[str, Any]) -> Html:
    facts = dl(
        [
            ("Transaction", t("<code>{}</code>", x["tx_hash"])),
            ("Block", t('{} <code class="small">{}</code>', block_link(x["block"]), x["block_hash"])),
            ("Time", when(x["time"])),
            ("Sent by", org_link(x["sender"])),
        ]
    )
    rows = [
        (
            e["log_index"],
            e["contract"],
            t('<span class="ev {}">{}</span>', e["tone"], e["text"]),
            event_cell({**e, "text": "", "tone": ""}),
            t("<details><summary>{}</summary><pre>{}</pre></details>", e["name"], _pretty(e["args"])),
        )
        for e in x["events"]
    ]
    return join(
        [
            page_head("Transaction", "The on-chain events this transaction emitted, as the auditor indexed them."),
            card("Transaction", facts),
            card("Events", table(("Log", "Contract", "What happened", "Concerns", "Raw event"), rows)),
        ]
    )


def _pretty(args: Any) -> str:
    import json

    return json.dumps(args, indent=2, sort_keys=True, default=str)


# ---------------------------------------------------------------------------- reports


def reports(
    params: dict[str, Any],
    org_choices: Sequence[tuple[str, str]],
    dataset_choices: Sequence[tuple[str, str]],
    preview: Html | None,
    error: str | None,
) -> Html:
    form = t(
        '<form class="filters report-form" method="get" action="/reports">'
        '<label>From<input type="date" name="from" value="{}" required></label>'
        '<label>To<input type="date" name="to" value="{}" required></label>'
        "{}{}"
        '<button type="submit">Show report</button></form>',
        params.get("from") or "",
        params.get("to") or "",
        select("org", [("", "All organisations"), *org_choices], params.get("org"), "Organisation"),
        select("dataset", [("", "All datasets"), *dataset_choices], params.get("dataset"), "Dataset"),
    )
    parts = [
        page_head(
            "Reports",
            "A report of every task, refusal, anomaly and use of data in a period, re-verified from the chain. "
            "Download it as a spreadsheet (CSV), as data (JSON) or as a printable page (HTML).",
        ),
        form,
    ]
    if error:
        parts.append(t('<p class="error" role="alert">{}</p>', error))
    if preview is not None:
        q = {k: params.get(k) for k in ("from", "to", "org", "dataset")}
        downloads = join(
            t(
                '<a class="button" id="download-{}" href="{}" download>{}</a>',
                fmt,
                url("/reports/download", **q, format=fmt),
                label,
            )
            for fmt, label in (("csv", "Download CSV"), ("json", "Download JSON"), ("html", "Download printable HTML"))
        )
        parts.append(t('<div class="downloads">{}</div>', downloads))
        parts.append(card("Report", preview, "report-preview"))
    return join(parts)


# ---------------------------------------------------------------------------- login


def login_page(
    *,
    chain_id: int,
    domain: str,
    address: str,
    message: str,
    next_url: str,
    error: str | None,
    expires_in: int | None,
) -> str:
    err = (
        t('<p class="error" id="login-error" role="alert">{}</p>', error)
        if error
        else Html('<p class="error" id="login-error" role="alert" hidden></p>')
    )
    return str(
        t(
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            "<title>Sign in · pcn audit</title>"
            '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
            '<link rel="stylesheet" href="/static/app.css"><script src="/static/login.js" defer></script></head>'
            '<body class="login-body"><main class="login" id="main">'
            "<h1>pcn <span>audit</span> — regulator sign-in</h1>"
            "<p>Sign in with an Ethereum account that holds the <b>auditor role</b> on chain {chain}. "
            "You sign a short text message with the account's key; no transaction is sent and nothing is paid. "
            "The dashboard is read-only.</p>"
            "{err}"
            '<form id="prepare-form" method="get" action="/login">'
            '<input type="hidden" name="next" value="{next}">'
            '<label for="address">1. Your auditor account address</label>'
            '<div class="row"><input id="address" name="address" value="{address}" placeholder="0x…" '
            'autocomplete="off" spellcheck="false" size="44">'
            '<button type="submit" id="prepare">Prepare sign-in message</button>'
            '<button type="button" id="wallet" hidden>Sign with browser wallet</button></div></form>'
            '<form id="login-form" method="post" action="/auth/verify">'
            '<input type="hidden" name="next" value="{next}">'
            '<label for="message">2. Sign this message with that account'
            "{valid}</label>"
            '<textarea id="message" name="message" rows="11" spellcheck="false" '
            'placeholder="Prepare the message first (step 1), or paste one made by `pcn audit sign-in-message`.">'
            "{message}</textarea>"
            '<p class="hint">With a key file: save the message to <code>message.txt</code> and run '
            "<code>pcn audit sign --key-file KEY --message-file message.txt</code>; it prints the signature. "
            "A browser wallet (MetaMask and the like) signs it with the button above.</p>"
            '<label for="signature">3. Paste the signature</label>'
            '<input id="signature" name="signature" placeholder="0x… (130 hex digits)" '
            'autocomplete="off" spellcheck="false">'
            '<button type="submit" id="signin" class="primary">Sign in</button>'
            "</form>"
            '<p class="muted small">This dashboard is {domain}; a message for another site or chain is refused, '
            "and each message can be used once.</p>"
            "</main></body></html>",
            chain=chain_id,
            err=err,
            next=next_url,
            address=address,
            valid=t(' <span class="muted small">(valid for {} minutes)</span>', max(1, (expires_in or 0) // 60))
            if message and expires_in
            else "",
            message=message,
            domain=domain,
        )
    )


def error_page(status: int, title: str, message: str, user: str | None, status_info: dict[str, Any]) -> str:
    return layout(
        title,
        t(
            '<div class="page-head"><h1>{}</h1></div><p class="lead">{}</p><p><a href="/">Back to the overview</a></p>',
            title,
            message,
        ),
        user=user,
        status=status_info,
        live=False,
    )
