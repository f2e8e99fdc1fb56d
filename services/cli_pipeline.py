"""The pipeline's commands of `sunflow-ops`: token, retry, trace, backup, publish, stats, logs."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.cli_common import UsageError, actor, run_with_services
from services.config import Settings
from services.errors import DomainError
from services.models import parse_id

if TYPE_CHECKING:
    from services.container import Services
    from services.tokens import TokenStatus


def add_pipeline_commands(sub: Any) -> None:
    token = sub.add_parser("token", help="the Instagram access token: status, guide, expiry")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    status = token_sub.add_parser("status", help="days left and state (ok/warning/critical/...)")
    status.add_argument("--json", action="store_true")
    token_sub.add_parser("guide", help="the renewal steps")
    expiry = token_sub.add_parser("set-expiry", help="the token was renewed; it lasts DAYS")
    expiry.add_argument("days", nargs="?", type=_positive_int, default=None)

    retry = sub.add_parser("retry", help="retry a failed job now, or --list the failed jobs")
    retry.add_argument("job_id", nargs="?", type=_job_id)
    retry.add_argument("--list", action="store_true", help="failed, running and exhausted jobs")
    retry.add_argument("--json", action="store_true")

    trace = sub.add_parser("trace", help="pipeline traces SF-YYYYMMDD-HHMMSS-xxxx")
    trace_sub = trace.add_subparsers(dest="trace_command", required=True, metavar="ACTION")
    tlist = trace_sub.add_parser("list", help="recent traces, newest first")
    tlist.add_argument("--limit", type=_positive_int, default=20)
    tlist.add_argument("--json", action="store_true")
    tshow = trace_sub.add_parser("show", help="one trace with its steps")
    tshow.add_argument("id")
    tshow.add_argument("--json", action="store_true")

    backup = sub.add_parser("backup", help="configuration backups")
    backup_sub = backup.add_subparsers(dest="backup_command", required=True, metavar="ACTION")
    backup_sub.add_parser("list", help="backups, newest first")
    create = backup_sub.add_parser("create", help="snapshot settings and policy files")
    create.add_argument("--note", default="")
    restore = backup_sub.add_parser("restore", help="restore a backup (snapshots first)")
    restore.add_argument("id")

    publish = sub.add_parser(
        "publish",
        help="images, upload, caption and post, under one trace (once per topic; "
        "PUBLISH_DAILY_LIMIT a day)",
    )
    publish.add_argument("topic")
    publish.add_argument(
        "--retry",
        action="store_true",
        help="run the topic's failed job now; refused when nothing failed or it is posted",
    )
    publish.add_argument("--dry-run", action="store_true", help="check everything, post nothing")
    publish.add_argument(
        "--force",
        action="store_true",
        help="post even if the topic is already posted or the daily limit is reached",
    )
    publish.add_argument("--json", action="store_true")

    generate = sub.add_parser("generate", help="generate the topic's images on fal.ai")
    generate.add_argument("topic")
    generate.add_argument("--retry", action="store_true", help="retry the topic's failed job")

    upload = sub.add_parser("upload", help="upload one image to Cloudinary by hand")
    upload.add_argument("path", type=Path)
    upload.add_argument("--topic", default=None)

    stats = sub.add_parser("stats", help="Instagram stats collection")
    stats_sub = stats.add_subparsers(dest="stats_command", required=True, metavar="ACTION")
    collect = stats_sub.add_parser("collect", help="collect now (skipped when fresh)")
    collect.add_argument("--force", action="store_true")
    stats_sub.add_parser("restart", help="re-arm the running service's collector job")

    logs = sub.add_parser("collect-logs", help="one archive: error lines, traces, timeline")
    logs.add_argument("incident_id", type=_job_id)


def _positive_int(value: str) -> int:
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive whole number")
    return int(value)


def _job_id(value: str) -> int:
    number = parse_id(value)
    if number is None:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number (e.g. 7)")
    return number


def _dump(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2, default=str))


def _cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    """`token status` and `set-expiry` ask the running service when there is one, so they
    tell what `health` tells (the service's own token, not the one .env holds now)."""
    if args.token_command in {"status", "set-expiry"}:
        answered = _token_from_service(args, settings)
        if answered is not None:
            return answered

    async def work(services: Services) -> int:
        tokens = services.ops.tokens
        if args.token_command == "guide":
            print(tokens.guide())
            return 0
        if args.token_command == "set-expiry":
            status = await tokens.set_expiry(args.days, actor=actor())
            print(f"expiry set: {status.expires_at:%Y-%m-%d} ({status.days_left} days)")
            print(status.text())
            return 0
        status = await tokens.status()
        if args.json:
            _dump({**status.to_json(), "source": "local"})
        else:
            print(status.text())
            print("(the service is not running: this is the token .env holds)")
        return _token_exit(status)

    return run_with_services(settings, work)


def _token_exit(status: TokenStatus) -> int:
    ok = status.state.value in {"ok", "warning"} and not status.restart_needed
    return 0 if ok else 1


def _token_from_service(args: argparse.Namespace, settings: Settings) -> int | None:
    from services.tokens import TokenStatus

    if args.token_command == "status":
        answer = _call_service(settings, "GET", "/api/token")
    else:
        if settings.admin_token is None:
            return None  # set locally; the service reads the same database
        body = {"days": args.days} if args.days is not None else {}
        answer = _call_service(settings, "POST", "/api/admin/token/expiry", body=body)
    if answer is None:
        return None
    code, data = answer
    if code >= 400:
        raise DomainError(_error_text(code, data))
    status = TokenStatus.from_json(data)
    if args.token_command == "set-expiry":
        print(f"expiry set: {status.expires_at:%Y-%m-%d} ({status.days_left} days)")
        print(status.text())
        return 0
    if args.json:
        _dump({**data, "source": "service"})
    else:
        print(status.text())
    return _token_exit(status)


def _cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    if args.list == (args.job_id is not None):
        raise UsageError("give a JOB_ID to retry now, or --list")

    async def work(services: Services) -> int:
        retry = services.ops.retry
        if args.list:
            jobs = await retry.list()
            if args.json:
                _dump([j.to_json() for j in jobs])
            elif not jobs:
                print("no failed jobs")
            else:
                now = services.clock.now()
                for job in jobs:
                    print(job.line(now))
            return 0
        job = await services.ops.runner.retry_now(args.job_id, actor=actor())
        if args.json:
            _dump(job.to_json())
        else:
            print(job.line(services.clock.now()))
        return 0 if job.state.value == "succeeded" else 1

    return run_with_services(settings, work)


def _cmd_trace(args: argparse.Namespace, settings: Settings) -> int:
    async def work(services: Services) -> int:
        traces = services.ops.traces
        if args.trace_command == "list":
            views = await traces.list(limit=args.limit)
            if args.json:
                _dump([v.to_json() for v in views])
            elif not views:
                print("no traces")
            for view in [] if args.json else views:
                print(view.line())
            return 0
        view = await traces.get(args.id)
        if args.json:
            _dump(view.to_json())
            return 0
        print(f"{view.id}  {view.kind} {view.topic}  {view.status}")
        print(f"  started {view.started_at.isoformat()}  took {view.duration_ms} ms")
        if view.error:
            print(f"  error: {view.error}")
        for step in view.steps:
            error = f"  {step.error}" if step.error else ""
            print(f"  {step.name:<18} {step.status:<9} {step.duration_ms:>7} ms{error}")
        return 0

    return run_with_services(settings, work)


def _cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    async def work(services: Services) -> int:
        backups = services.ops.backups
        if args.backup_command == "list":
            found = await backups.list()
            for info in found:
                print(info.line())
            if not found:
                print("no backups")
            return 0
        if args.backup_command == "create":
            info = await backups.create(actor=actor(), note=args.note)
            print(f"backup {info.id} created: {', '.join(info.files)}")
            return 0
        result = await backups.restore(args.id, actor=actor())
        print(result.text())
        return 0

    return run_with_services(settings, work)


def _cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    async def work(services: Services) -> int:
        pipeline = services.ops.pipeline
        if args.dry_run:
            report = await pipeline.dry_run(args.topic)
            if args.json:
                _dump(report.to_json())
            else:
                print(report.text())
            return 0 if report.ok else 1
        result = await pipeline.publish(
            args.topic, retry=args.retry, force=args.force, actor=actor()
        )
        if args.json:
            _dump(result.to_json())
        else:
            print(result.text())
        return 0 if result.ok else 1

    return run_with_services(settings, work)


def _cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    async def work(services: Services) -> int:
        result = await services.ops.pipeline.generate_images(args.topic, retry=args.retry)
        print(result.text())
        return 0 if result.ok else 1

    return run_with_services(settings, work)


def _cmd_upload(args: argparse.Namespace, settings: Settings) -> int:
    async def work(services: Services) -> int:
        result = await services.ops.pipeline.upload(args.path, topic=args.topic)
        print(result.text())
        return 0 if result.ok else 1

    return run_with_services(settings, work)


def _cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    if args.stats_command == "restart":
        # The daemon restart works only if the collection it runs at once works: exit 1 if not.
        body = _ask_service(settings, "POST", "/api/admin/stats/restart")
        if body.get("ok"):
            print(f"stats collector restarted and collected now; next run {body['next_run_time']}")
            return 0
        print(
            f"stats collector re-armed (next run {body.get('next_run_time')}), but collecting "
            f"now failed: {body.get('detail')}",
            file=sys.stderr,
        )
        return 1

    async def work(services: Services) -> int:
        result = await services.ops.stats.collect(force=args.force)
        when = result.last_updated.isoformat() if result.last_updated else "never"
        print(f"{'collected' if result.collected else 'not collected'}: {result.detail}")
        print(f"last_updated {when}")
        return 0 if result.collected or "fresh" in result.detail else 1

    return run_with_services(settings, work)


def _cmd_collect_logs(args: argparse.Namespace, settings: Settings) -> int:
    async def work(services: Services) -> int:
        bundle = await services.ops.bundles.collect(args.incident_id)
        print(
            f"{bundle.path} ({bundle.size} bytes): {bundle.error_lines} error lines, "
            f"traces {', '.join(bundle.traces) or 'none'}"
        )
        return 0

    return run_with_services(settings, work)


def _service_url(settings: Settings, path: str) -> str:
    host = "127.0.0.1" if settings.http_host in {"0.0.0.0", "::", ""} else settings.http_host
    return f"http://{host}:{settings.http_port}{path}"


def _call_service(
    settings: Settings, method: str, path: str, *, body: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any]] | None:
    """One HTTP call to the running service (with ADMIN_TOKEN when set); None when nothing
    answers there (the service is not running)."""
    import aiohttp

    url = _service_url(settings, path)
    headers = {}
    if settings.admin_token is not None:
        headers["Authorization"] = f"Bearer {settings.admin_token.get_secret_value()}"

    async def call() -> tuple[int, dict[str, Any]]:
        timeout = aiohttp.ClientTimeout(total=30)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, url, headers=headers, json=body) as resp,
        ):
            data = await resp.json(content_type=None)
            return resp.status, data if isinstance(data, dict) else {}

    try:
        return asyncio.run(call())
    except aiohttp.ClientConnectionError:
        return None
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise DomainError(f"the service at {url} did not answer ({type(exc).__name__})") from None


def _ask_service(settings: Settings, method: str, path: str) -> dict[str, Any]:
    """Work only the running service can do (its scheduler): an admin HTTP call to it."""
    if settings.admin_token is None:
        raise DomainError("ADMIN_TOKEN is not set, so the running service cannot be asked")
    answer = _call_service(settings, method, path)
    if answer is None:
        raise DomainError(
            f"the service at {_service_url(settings, path)} is not running (sunflow-ops serve)"
        )
    status, body = answer
    if status >= 400:
        raise DomainError(_error_text(status, body))
    return body


def _error_text(status: int, body: dict[str, Any]) -> str:
    detail = body.get("detail")
    message = detail.get("message") if isinstance(detail, dict) else detail
    return f"{body.get('error', status)}: {message}"


PIPELINE_COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "token": _cmd_token,
    "retry": _cmd_retry,
    "trace": _cmd_trace,
    "backup": _cmd_backup,
    "publish": _cmd_publish,
    "generate": _cmd_generate,
    "upload": _cmd_upload,
    "stats": _cmd_stats,
    "collect-logs": _cmd_collect_logs,
}
