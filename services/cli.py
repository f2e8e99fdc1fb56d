"""`sunflow-ops`: the command line over the same services as the bot and the HTTP API."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from services.cli_common import UsageError, actor, run_with_services
from services.cli_heartbeats import HEARTBEAT_COMMANDS, add_heartbeat_commands
from services.cli_pipeline import PIPELINE_COMMANDS, add_pipeline_commands
from services.config import Settings, SettingsError, load_settings
from services.errors import DomainError
from services.incident_types import IncidentView
from services.locales import LANGUAGES
from services.models import IncidentState, parse_id
from services.policy import PolicyError
from services.severity import parse_severity

PROG = "sunflow-ops"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="SunFlow Ops incident response")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("serve", help="run the HTTP service, scheduler and Telegram bot")

    health = sub.add_parser(
        "health",
        help="ask the running service for its health (exit 0 healthy, 1 degraded, 2 down)",
    )
    health.add_argument("--json", action="store_true", help="print the JSON report")

    db = sub.add_parser("db", help="database migrations")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = db_sub.add_parser("upgrade", help="migrate to the newest revision (or REVISION)")
    up.add_argument("revision", nargs="?", default="head")
    down = db_sub.add_parser("downgrade", help="migrate back to REVISION")
    down.add_argument("revision")

    notify = sub.add_parser("notify", help="notification channels (Telegram, e-mail, webhook)")
    notify_sub = notify.add_subparsers(dest="notify_command", required=True, metavar="ACTION")
    test = notify_sub.add_parser(
        "test",
        help="send a test message through every configured channel "
        "(exit 0 all delivered, 1 one failed, 2 none configured)",
    )
    test.add_argument("--json", action="store_true")

    inc = sub.add_parser("incident", help="list, show, acknowledge, resolve and reopen incidents")
    inc_sub = inc.add_subparsers(dest="incident_command", required=True, metavar="ACTION")
    lst = inc_sub.add_parser("list", help="incidents, most urgent first")
    lst.add_argument("--state", default="open", help="open (default), all, or a comma list")
    lst.add_argument("--severity", default="", help="comma list of P0..P3")
    lst.add_argument("--limit", type=int, default=50)
    lst.add_argument("--json", action="store_true")
    show = inc_sub.add_parser("show", help="one incident with its timeline")
    show.add_argument("id", type=_incident_id)
    show.add_argument("--json", action="store_true")
    for name in ("ack", "resolve", "reopen"):
        action = inc_sub.add_parser(name, help=f"{name} an incident")
        action.add_argument("id", type=_incident_id)
        action.add_argument("--note", default=None)
    pm = inc_sub.add_parser("postmortem", help="print the Markdown post-mortem")
    pm.add_argument("id", type=_incident_id)
    pm.add_argument("--lang", choices=LANGUAGES, default=None)
    pm.add_argument(
        "--set",
        nargs=2,
        metavar=("FIELD", "TEXT"),
        help="fill a field first: summary, impact, cause or prevention",
    )

    report = sub.add_parser("report", help="the weekly incident report")
    report.add_argument("--days", type=int, default=7)
    report.add_argument("--json", action="store_true")
    report.add_argument("--chart", metavar="PNG", help="also write the chart to this file")
    add_pipeline_commands(sub)
    add_heartbeat_commands(sub)
    return parser


def _incident_id(value: str) -> int:
    number = parse_id(value)
    if number is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not an incident number (e.g. 42)")
    return number


def _age(view: IncidentView, now: datetime) -> str:
    seconds = int((now - view.first_seen_at).total_seconds())
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600}h"


def format_incident_line(view: IncidentView, now: datetime) -> str:
    who = ""
    if view.state is IncidentState.ACKNOWLEDGED and view.acknowledged_by:
        who = f" by {view.acknowledged_by}"
    return (
        f"#{view.id:<5} {view.severity.value}  {view.state.value:<12}{who:<0} "
        f"x{view.occurrence_count:<4} {_age(view, now):>7}  {view.title}"
    )


def _cmd_incident(args: argparse.Namespace, settings: Settings) -> int:
    async def work(services: Any) -> int:
        incidents = services.incidents
        if args.incident_command == "list":
            states: list[IncidentState] | None
            if args.state == "all":
                states = None
            elif args.state == "open":
                states = [IncidentState.TRIGGERED, IncidentState.ACKNOWLEDGED]
            else:
                try:
                    states = [IncidentState(s.strip()) for s in args.state.split(",") if s.strip()]
                except ValueError:
                    raise UsageError(
                        f"--state {args.state!r}: "
                        "use open, all, or triggered,acknowledged,resolved"
                    ) from None
            try:
                severities = [parse_severity(s) for s in args.severity.split(",") if s.strip()]
            except ValueError as exc:
                raise UsageError(f"--severity: {exc}") from None
            views = await incidents.list(states=states, severities=severities, limit=args.limit)
            if args.json:
                print(json.dumps([v.to_json() for v in views], ensure_ascii=False, indent=2))
            elif not views:
                print("no incidents")
            else:
                now = datetime.now(UTC)
                for view in views:
                    print(format_incident_line(view, now))
            return 0
        if args.incident_command == "show":
            detail = await incidents.get(args.id)
            if args.json:
                print(json.dumps(detail.to_json(), ensure_ascii=False, indent=2))
                return 0
            view = detail.incident
            print(format_incident_line(view, datetime.now(UTC)))
            print(f"  source {view.source}  dedup {view.dedup_key}")
            print(f"  response deadline {view.response_deadline.isoformat()}")
            for entry in detail.timeline:
                extra = (
                    f" {json.dumps(entry.details, ensure_ascii=False)}" if entry.details else ""
                )
                print(f"  {entry.at.isoformat()}  {entry.kind:<13} {entry.actor}{extra}")
            return 0
        if args.incident_command == "postmortem":
            if args.set:
                field, text = args.set
                await services.postmortems.set_field(args.id, field, text, actor=actor())
            document = await services.postmortems.build(args.id, language=args.lang)
            print(document.markdown)
            return 0
        if args.incident_command == "ack":
            view = await incidents.acknowledge(args.id, actor=actor(), note=args.note)
            print(f"#{view.id} acknowledged by {view.acknowledged_by}")
            return 0
        if args.incident_command == "reopen":
            view = await incidents.reopen(args.id, actor=actor(), note=args.note)
            print(f"#{view.id} reopened; escalation starts again")
            return 0
        view = await incidents.resolve(args.id, actor=actor(), note=args.note)
        print(f"#{view.id} resolved by {view.resolved_by}")
        return 0

    return run_with_services(settings, work)


def _cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from services.reports import chart_png, summary_text

    if not 1 <= args.days <= 366:
        raise UsageError("--days is a number from 1 to 366")

    async def work(services: Any) -> int:
        report = await services.reports.weekly(days=args.days)
        if args.json:
            print(json.dumps(report.to_json(), ensure_ascii=False, indent=2))
        else:
            print(summary_text(report, language=settings.bot_language))
        if args.chart:
            with open(args.chart, "wb") as out:
                out.write(chart_png(report))
        return 0

    return run_with_services(settings, work)


def _cmd_notify(args: argparse.Namespace, settings: Settings) -> int:
    """The playbook's "send a test message" (scenario 6), on every configured channel."""

    async def work(services: Any) -> int:
        results = await services.notify.send_test(actor=actor())
        if args.json:
            print(json.dumps([r.to_json() for r in results], ensure_ascii=False, indent=2))
        elif not results:
            print(
                "no channel configured: set TELEGRAM_BOT_TOKEN, SMTP_URL or FALLBACK_WEBHOOK_URL"
            )
        else:
            for result in results:
                print(f"{result.channel:<9} {'ok' if result.ok else 'FAILED':<7} {result.detail}")
        if not results:
            return 2
        return 0 if all(r.ok for r in results) else 1

    return run_with_services(settings, work)


def _cmd_health(args: argparse.Namespace, settings: Settings) -> int:
    import aiohttp

    host = "127.0.0.1" if settings.http_host in {"0.0.0.0", "::", ""} else settings.http_host
    url = f"http://{host}:{settings.http_port}/api/health"

    async def fetch() -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
            data: dict[str, Any] = await resp.json()
            return data

    try:
        report = asyncio.run(fetch())
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        report = {
            "status": "down",
            "components": {
                "service": {"status": "down", "detail": f"{url}: {type(exc).__name__}"}
            },
        }
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print(f"overall: {report.get('status')}")
        for name, comp in (report.get("components") or {}).items():
            print(f"  {name:<12} {comp.get('status', '?'):<9} {comp.get('detail', '')}")
    return {"healthy": 0, "degraded": 1}.get(str(report.get("status")), 2)


def _cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from services import db

    if args.db_command == "upgrade":
        db.upgrade(settings.database_url, args.revision)
        print(f"database at {args.revision}")
    else:
        db.downgrade(settings.database_url, args.revision)
        print(f"database at {args.revision}")
    return 0


def _cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from services.logs import configure_logging
    from services.main import migrate, serve

    configure_logging(settings)
    migrate(settings)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(settings))
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed: measured faster for intake (docs/benchmarks-history.md)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "serve": _cmd_serve,
    "health": _cmd_health,
    "db": _cmd_db,
    "incident": _cmd_incident,
    "report": _cmd_report,
    "notify": _cmd_notify,
    **PIPELINE_COMMANDS,
    **HEARTBEAT_COMMANDS,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.command](args, settings)
    except DomainError as exc:
        print(f"{PROG}: {exc.message}", file=sys.stderr)
        return 1
    except (UsageError, PolicyError, SettingsError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
