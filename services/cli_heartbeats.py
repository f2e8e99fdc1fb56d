"""`sunflow-ops heartbeat add|list|remove`: dead-man's switches from the command line."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from services.cli_common import actor, run_with_services
from services.config import Settings
from services.durations import format_duration, parse_duration
from services.heartbeats import NAME, NAME_RULE
from services.severity import Severity, parse_severity

if TYPE_CHECKING:
    from services.container import Services


def add_heartbeat_commands(sub: Any) -> None:
    beat = sub.add_parser("heartbeat", help="dead-man's switches: a missed ping opens an incident")
    beat_sub = beat.add_subparsers(dest="heartbeat_command", required=True, metavar="ACTION")
    add = beat_sub.add_parser("add", help="add a heartbeat (or change an existing one)")
    add.add_argument("name", type=_name)
    add.add_argument("--every", required=True, type=_every, help="expected ping period: 1h")
    add.add_argument("--grace", required=True, type=_grace, help="lateness allowed: 10m or 0")
    add.add_argument("--severity", default=Severity.P2, type=_severity, help="P0-P3 (P2)")
    listing = beat_sub.add_parser("list", help="every heartbeat: state, last ping, due time")
    listing.add_argument("--json", action="store_true")
    remove = beat_sub.add_parser("remove", help="remove a heartbeat (resolves its incident)")
    remove.add_argument("name", type=_name)


def _name(value: str) -> str:
    if not NAME.match(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a heartbeat name: {NAME_RULE}")
    return value


def _every(value: str) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _grace(value: str) -> timedelta:
    if value.strip().rstrip("smhdw") == "0":
        return timedelta(0)
    return _every(value)


def _severity(value: str) -> Severity:
    try:
        return parse_severity(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def ping_command(settings: Settings, name: str) -> str:
    """The one line a cron job runs after its work."""
    host = "127.0.0.1" if settings.http_host in {"0.0.0.0", "::", ""} else settings.http_host
    url = f"http://{host}:{settings.http_port}/api/heartbeats/{name}/ping"
    return f'curl -fsS -m 10 -X POST -H "Authorization: Bearer $INTAKE_TOKEN" {url}'


def _cmd_heartbeat(args: argparse.Namespace, settings: Settings) -> int:

    async def work(services: Services) -> int:
        heartbeats = services.heartbeats
        if args.heartbeat_command == "add":
            view, created = await heartbeats.add(
                args.name,
                every=args.every,
                grace=args.grace,
                severity=args.severity,
                actor=actor(),
            )
            print(
                f"heartbeat {view.name} {'added' if created else 'changed'}: a ping every "
                f"{format_duration(view.every)}, grace {format_duration(view.grace)}, "
                f"{view.severity.value} when missed"
            )
            print(f"ping it with: {ping_command(settings, view.name)}")
            return 0
        if args.heartbeat_command == "remove":
            resolved = await heartbeats.remove(args.name, actor=actor())
            extra = f"; incident #{resolved.id} resolved" if resolved else ""
            print(f"heartbeat {args.name} removed{extra}")
            return 0
        now = heartbeats.now()
        views = await heartbeats.views()
        if args.json:
            print(json.dumps([v.to_json(now) for v in views], ensure_ascii=False, indent=2))
            return 0
        if not views:
            print("no heartbeats; add one: sunflow-ops heartbeat add NAME --every 1h --grace 10m")
            return 0
        for view in views:
            last = (
                view.last_ping_at.isoformat(timespec="seconds") if view.last_ping_at else "never"
            )
            print(
                f"{view.name:<28} {view.state(now).value:<8} every "
                f"{format_duration(view.every):<6} grace {format_duration(view.grace):<5} "
                f"{view.severity.value}  last ping {last}  due "
                f"{view.due_at.isoformat(timespec='seconds')}"
            )
        return 0

    return run_with_services(settings, work)


HEARTBEAT_COMMANDS = {"heartbeat": _cmd_heartbeat}
