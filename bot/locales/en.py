"""English messages. Values given to placeholders are already HTML-escaped."""

from services.locales import SHARED
from services.locales.en import TEXTS

MESSAGES: dict[str, str] = {
    # The words the documents share (severities, timeline entries, our own actors):
    # services/locales.
    **{k: v for k, v in TEXTS.items() if k.startswith(SHARED)},
    "start": (
        "<b>SunFlow Ops</b> is here. I post P0–P3 alerts and take commands.\n"
        "Your role: <b>{role}</b>. Send /help for the commands."
    ),
    "help.title": "<b>Commands</b>",
    "help.role": "Your role: <b>{role}</b>",
    "cmd.start": "introduce the bot",
    "cmd.help": "list the commands",
    "cmd.health": "health of every component",
    "cmd.token": "Instagram token status",
    "cmd.retry": "retry a failed job",
    "cmd.sse_reset": "reset SSE connections (admin)",
    "cmd.incidents": "open incidents",
    "cmd.ack": "acknowledge an incident",
    "cmd.resolve": "resolve an incident",
    "cmd.snooze": "hold escalation for a while",
    "cmd.status": "how many incidents are open, by severity",
    "cmd.notify_test": "send a test message on every channel (admin)",
    "usage.ack": (
        "Usage: /ack ID [DURATION] — e.g. /ack 42 or /ack 42 30m; "
        "or reply to the alert with /ack [DURATION]"
    ),
    "usage.resolve": (
        "Usage: /resolve ID [note] — e.g. /resolve 42 token renewed; "
        "or reply to the alert with /resolve [note]"
    ),
    "usage.snooze": (
        "Usage: /snooze ID DURATION — e.g. /snooze 42 1h; "
        "or reply to the alert with /snooze DURATION"
    ),
    "unknown": "I don't know that command. Send /help for the list.",
    "refused": (
        "Sorry, this needs the {required} role and you are {role} (your id: {user_id}). "
        "Ask an admin if you need it."
    ),
    "role.outsider": "not a team member",
    "role.viewer": "viewer",
    "role.responder": "responder",
    "role.admin": "admin",
    "error": "⚠️ {message}",
    "error.internal": "⚠️ That failed on our side; it is logged. Please try again.",
    "status.healthy": "healthy",
    "status.degraded": "degraded",
    "status.down": "down",
    "incidents.none": "No open incidents. 🌤",
    "incidents.title": "<b>Open incidents ({count})</b>",
    "incidents.line": "{badge} <b>#{id}</b> {title} · {state} · ×{count} · {age}",
    "status.title": "<b>Status</b>",
    "status.counts": "Open incidents: {total} — P0 {P0} · P1 {P1} · P2 {P2} · P3 {P3}",
    "state.triggered": "🚨 open",
    "state.acknowledged": "👀 acknowledged",
    "state.resolved": "✅ resolved",
    # The fallback channel (e-mail, webhook): plain text, read when Telegram is not reached.
    "fallback.alert.subject": "[{severity}] #{id} {title}",
    "fallback.alert.body": (
        "{severity} ({meaning}) incident #{id}\n"
        "title: {title}\n"
        "source: {source}\n"
        "state: {state}, seen {count} time(s)\n"
        "first seen: {first_seen}\n"
        "respond by: {deadline}\n"
        "labels: {labels}\n"
        "\n"
        "{description}\n"
        "\n"
        "Sent by SunFlow Ops over the fallback channel: {reason}."
    ),
    "fallback.reason.bot_off": "the Telegram bot is off",
    "fallback.reason.telegram_failing": "Telegram has been failing since {since}",
    "fallback.reason.not_delivered": "not delivered to Telegram within {after}",
    "fallback.down.subject": "[SunFlow Ops] Telegram failing: alerts do not reach the chat",
    "fallback.down.body": (
        "Telegram has not accepted a message since {since} ({minutes} min).\n"
        "{pending} message(s) wait in the outbox{oldest}; P0/P1 alerts come here as well "
        "until Telegram delivers again.\n"
        "Last error: {error}\n"
        "\n"
        "Playbook scenario 6: sunflow-ops health (telegram component), check "
        "TELEGRAM_BOT_TOKEN, restart the service, sunflow-ops notify test."
    ),
    "fallback.down.oldest": ", the oldest from {oldest}",
    "fallback.down.no_error": "unknown",
    "fallback.test.subject": "SunFlow Ops test message",
    "fallback.database.subject": "[P0] SunFlow Ops database refuses writes ({instance})",
    "fallback.database.body": (
        "The database health check on {instance} failed: {detail}\n"
        "No incident could be recorded either: {reason}\n"
        "Check the disk space, the file's permissions or the role's privileges.\n"
        "\n"
        "Sent by SunFlow Ops over the fallback channel: the database is down."
    ),
    "fallback.up.subject": "[SunFlow Ops] Telegram delivers again",
    "fallback.up.body": (
        "Telegram accepts messages again (failing from {since} to about {now}); the outbox "
        "backlog is being delivered."
    ),
    "card.state": "State: {state}",
    "card.by": "{state} by {actor} at {at}",
    "card.ack_until": " (until {until})",
    "card.meta": "Source: {source} · Count: {count} · Age: {age}",
    "card.deadline": "Respond by: {deadline} ({left})",
    "card.deadline.overdue": "overdue by {delta}",
    "card.deadline.left": "{delta} left",
    "card.labels": "Labels: {labels}",
    "card.snoozed": "💤 Snoozed until {until}",
    "card.last": "Last: {what}",
    "button.ack": "👀 Ack",
    "button.resolve": "✅ Resolve",
    "button.details": "🔎 Details",
    "change.triggered": "raised by {actor}",
    "change.deduplicated": "seen again (×{count})",
    "change.acknowledged": "acknowledged by {actor}",
    "change.resolved": "resolved by {actor}",
    "change.reopened": "reopened by {actor}",
    "change.annotated": "note by {actor}: {text}",
    "change.snoozed": "💤 snoozed by {actor} until {until}",
    "change.unacknowledged": "⏰ the acknowledgement by {who} ran out; escalation resumes",
    "change.escalated": "📣 escalated ({step} → {target}){late}: {message}",
    "change.escalated.late": " late",
    "change.deadline_missed": (
        "⏰ {incident}{severity} not acknowledged for {waited}: its response deadline "
        "({deadline}) has passed. {next}"
    ),
    "change.deadline_missed.next": "Next: {step} → {target}{who} at {at}.",
    "change.deadline_missed.last": "No further escalation step is scheduled.",
    "change.other": "{kind} by {actor}",
    "direct.escalated": "📣 You are paged for {badge} <b>#{id}</b> {title}\n{message}",
    "done.ack": "👀 #{id} acknowledged by {actor}",
    "done.ack_until": "👀 #{id} acknowledged by {actor} until {until}",
    "done.resolve": "✅ #{id} resolved by {actor}",
    "done.snooze": "💤 #{id} snoozed until {until}",
    "done.reopen": "🚨 #{id} reopened by {actor}; escalation starts again",
    "usage.reopen": "Usage: /reopen ID [note] — e.g. /reopen 42 came back",
    "cmd.reopen": "reopen a resolved incident (escalation starts again)",
    "button.open_in_group": "💬 Open in group",
    "health.title": "Health: {status}",
    "health.mark.healthy": "OK",
    "health.mark.degraded": "WARN",
    "health.mark.down": "DOWN",
    "error.ack_resolved": "⚠️ #{id} is resolved; reopen it first: /reopen {id}",
    "error.already_acknowledged": "⚠️ #{id} is already acknowledged by {acknowledged_by}",
    "error.already_resolved": "⚠️ #{id} is already resolved by {resolved_by}",
    "error.not_resolved": "⚠️ #{id} is not resolved; there is nothing to reopen",
    "error.key_open": "⚠️ #{id} cannot be reopened: another open incident has the same dedup key",
    "error.snooze_resolved": "⚠️ #{id} is resolved; there is nothing to snooze",
    "error.snooze_range": "⚠️ Snooze for between 1 minute and 7 days, e.g. 30m or 2h",
    "error.ack_duration": "⚠️ An acknowledgement duration must be positive, e.g. 30m",
    "error.no_incident": "⚠️ There is no incident #{id}",
    "token.line.unset": "Instagram token: INSTAGRAM_ACCESS_TOKEN is not set",
    "token.line.state": "Instagram token: {state}",
    "token.line.restart": (
        "restart needed: .env holds another INSTAGRAM_ACCESS_TOKEN than the one "
        "this service runs with; restart sunflow-ops serve (systemctl restart "
        "'sunflow-ops@*')"
    ),
    "token.line.expires": "expires {at} ({days} days left)",
    "token.line.no_expiry": "no expiry registered: run `token set-expiry 60` after renewing",
    "token.line.live": "live check: {verdict}",
    "token.line.unauthorized": (
        "the Graph API answered 401 (incident #{id} open until a call succeeds)"
    ),
    "token.live.valid": "valid",
    "token.live.invalid": "INVALID",
    "token.state.ok": "ok",
    "token.state.warning": "warning",
    "token.state.critical": "critical",
    "token.state.expired": "expired",
    "token.state.unknown": "unknown",
    "detail.title": "{badge} <b>#{id} {title}</b> · {state}",
    "detail.meta": "Source: {source} · dedup key: <code>{dedup}</code>",
    "detail.timeline": "<b>Timeline</b>",
    "detail.entry": "{at} · {kind} · {actor}",
    "notify.title": "<b>Test message sent</b>",
    "notify.line": "{badge} {channel}: {detail}",
    "trimmed": "\n… (trimmed; the full text is attached)",
    "document.caption": "Full text of incident #{id}",
    # -- pipeline operations ----------------------------------------------------
    "cmd.traces": "recent pipeline traces, or one: /traces ID",
    "cmd.stats": "stats collector status; /stats restart",
    "cmd.backup": "configuration backups: list, create, restore (admin)",
    "usage.token": (
        "Usage: /token [status|guide|set_expiry [DAYS]] — e.g. /token, /token guide, "
        "/token set_expiry 60"
    ),
    "usage.retry": "Usage: /retry [JOB_ID] — e.g. /retry to list failed jobs, /retry 7",
    "usage.traces": "Usage: /traces [TRACE_ID] — e.g. /traces SF-20260130-090000-ab12",
    "usage.backup": (
        "Usage: /backup [list|create [note]|restore BACKUP_ID] — e.g. /backup create "
        "before token change"
    ),
    "usage.stats": "Usage: /stats [status|restart]",
    "token.title": "<b>🔑 Instagram token</b>",
    "token.weekly": "<b>🗓 Weekly Instagram token status</b>",
    "token.hint": "Renewal steps: /token guide",
    "token.set": "✅ Token expiry registered by {actor}",
    "retry.none": "No failed pipeline jobs. 🌤",
    "retry.title": "<b>Pipeline jobs ({count})</b>",
    "retry.hint": "Press a Retry button or send /retry JOB_ID.",
    "retry.done": "🔁 Job #{id} retried by {actor}: <b>{state}</b>",
    "button.retry": "🔁 Retry #{id}",
    "button.logs": "📦 Logs",
    "traces.none": "No pipeline traces yet.",
    "traces.title": "<b>Recent traces ({count})</b>",
    "traces.hint": "Details: /traces TRACE_ID",
    "trace.title": "<b>Trace {id}</b> · {kind} {topic} · {status} · {took}",
    "trace.running": "running",
    "trace.step": "{badge} {name} · {status} · {ms} ms{error}",
    "trace.error": "Error: {error}",
    "backup.none": "No backups yet. Create one: /backup create",
    "backup.title": "<b>Backups ({count})</b>",
    "backup.created": "💾 Backup <code>{id}</code> created ({files})",
    "backup.restored": "♻️ {text}",
    "stats.status": "{badge} <b>Stats collector</b> — {status}: {detail}",
    "stats.restarted": "🔄 Stats collector restarted and collected now; next run {next}",
    "stats.restart_failed": "⚠️ Stats collector re-armed (next run {next}), but collecting "
    "now failed: {detail}",
    "stats.not_configured": (
        "<code>INSTAGRAM_ACCESS_TOKEN</code> or <code>INSTAGRAM_USER_ID</code> "
        "is not set on the server"
    ),
    "stats.not_scheduled": "not scheduled",
    "logs.caption": "📦 Logs of incident #{id}: {traces} trace(s), {lines} error line(s)",
    "logs.sent": "Logs of #{id} sent",
    # -- escalation, SSE admin, checklists, post-mortems, reports --
    "cmd.oncall": "who is on call; /oncall set USER_ID 8h (admin)",
    "cmd.postmortem": "post-mortem of an incident; fill its fields (responder)",
    "cmd.report": "the weekly incident report with its chart",
    "usage.oncall": (
        "Usage: /oncall, or /oncall set USER_ID DURATION [name] — e.g. /oncall set 42 8h"
    ),
    "usage.postmortem": (
        "Usage: /postmortem ID, or /postmortem ID summary|impact|cause|prevention TEXT"
    ),
    "oncall.title": "<b>On call</b>",
    "oncall.person": "📟 {name} (id <code>{user_id}</code>)",
    "oncall.nobody": "📟 nobody from the rotation (no rotation in the policy file)",
    "oncall.override": "Override until {until}",
    "oncall.handover": "Next handover: {at}",
    "oncall.pd": "Also paged at the PD step: {ids}",
    "oncall.set": "📟 {name} is on call until {until} (set by {actor})",
    "card.next": "⏭ Next: {step} → {target} at {at}, {when}",
    "card.next.in": "in {delta}",
    "card.next.due": "due now",
    "card.retry.next": "🔁 Retry {n}/{total} of job #{id} ({work}) at {at}, {when} · {left} left",
    "card.retry.running": "🔁 Job #{id} ({work}): retry {n}/{total} running",
    "card.retry.exhausted": "⛔ Job #{id} ({work}): automatic retries done, {done}/{total} "
    "failed — /retry {id}",
    "card.retry.refused": "⛔ Job #{id} ({work}): not retried automatically — fix it, then "
    "/retry {id}",
    "card.retry.succeeded": "✅ Job #{id} ({work}) succeeded at {at}",
    "card.runbook": "📖 Runbook: {where}",
    "card.commands": "🛠 {commands}",
    "button.runbook": "📖 Runbook",
    "card.checklist_open": "☐ {count} checklist items are still unticked",
    "button.checklist": "☑ Checklist",
    "button.snooze_for": "💤 {duration}",
    "checklist.title": "☑ <b>#{id}</b> — checklists (tap an item to tick it)",
    "checklist.list": "<b>{name}</b>: {done}/{total}",
    "sse.choose": "<b>SSE reset</b> — {connections} streams open. Choose a runbook action:",
    "sse.confirm": "<b>{action}</b> with {connections} streams open. Confirm?",
    "sse.cancelled": "SSE reset cancelled.",
    "sse.done": (
        "✅ <b>{action}</b> done by {actor}: {before} streams before, {after} after "
        "({closed} closed)"
    ),
    "sse.instances": "{answered} of {reached} instances answered",
    "sse.button.restart": "🔁 Restart the hub",
    "sse.button.reset": "🔌 Reset connections",
    "sse.button.broadcast": "📣 Broadcast reconnect",
    "sse.button.confirm": "✅ Confirm",
    "sse.button.cancel": "✖ Cancel",
    "sse.action.restart": "Restart the hub",
    "sse.action.reset": "Reset connections",
    "sse.action.broadcast": "Broadcast reconnect",
    "postmortem.missing": (
        "Post-mortem of #{id}. Still to fill: {fields} (/postmortem {id} FIELD TEXT)"
    ),
    "postmortem.complete": "Post-mortem of #{id}: every field is filled.",
    "postmortem.set": "📝 #{id}: {field} recorded by {actor}",
    "report.caption": "Incidents this week",
    # -- heartbeats --
    "cmd.heartbeats": "dead-man's switches: last ping and state",
    "heartbeats.none": (
        "No heartbeats yet. Add one from the server: "
        "<code>sunflow-ops heartbeat add NAME --every 1h --grace 10m</code>"
    ),
    "heartbeats.title": "<b>Heartbeats ({count})</b>",
    "heartbeats.line": (
        "{badge} <b>{name}</b> · {state} · every {every} (grace {grace}) · {severity}\n"
        "    last ping {last} · due {due}"
    ),
    "heartbeats.ago": "{delta} ago",
    "heartbeats.never": "never",
    "heartbeats.state.up": "on time",
    "heartbeats.state.waiting": "waiting for its first ping",
    "heartbeats.state.late": "late (in grace)",
    "heartbeats.state.down": "missed",
    # korean branch
    "health.reason.timeout": "no answer within {seconds} s",
    "health.reason.error": "{error}",
    "health.reason.not_configured": "not configured",
    "health.reason.reachable": "reachable",
    "health.reason.fal_reachable": "{model} reachable",
    "health.reason.last_call": (
        "last real call ({operation} at {at}) failed, {status}{failures} in a row: {error}"
    ),
    "health.reason.last_ok": "last call ok at {at}",
    "health.reason.no_call": "no call yet",
    "health.reason.token_days": "{days} days left",
    "health.reason.token_no_expiry": "expiry unknown",
    "health.reason.token_expired": "expired",
    "health.reason.token_unauthorized": "the Graph API answered 401 (incident #{id})",
    "health.reason.token_invalid": "expired: {error}",
    "health.reason.restart": "; restart needed (.env holds another token)",
    "health.reason.stats_never": "never collected",
    "health.reason.stats_stale": "stale: {hours} h old (limit {limit} h)",
    "health.reason.stats_age": "{minutes} min old",
    "health.reason.stats_failing": "; collection failing since {since}: {error}",
    "health.reason.sse_healthy": "streaming ({connections} open)",
    "health.reason.sse_degraded": "at MAX_SSE_CONNECTIONS: new streams are refused",
    "health.reason.sse_down": "the hub timer is not running (heartbeats and cleanup stopped)",
    "health.reason.redis_down": "unreachable ({error}): events cannot be published",
    "health.reason.redis_resubscribing": "reachable; resubscribing to the SSE channels",
    "health.reason.redis_up": "up",
    "health.reason.heartbeats_overdue": "overdue: {names}",
    "health.reason.heartbeats_on_time": "{count} on time",
    "health.reason.leader_leads": "{instance} leads (fencing token {token})",
    "health.reason.leader_follows": "{instance} follows {holder}",
    "health.reason.leader_none": "{instance} follows; no leader at the moment",
    "health.reason.scheduler_down": "not running",
    "health.reason.scheduler_jobs": "{count} jobs",
    "health.reason.database_ok": "read and write ok",
    "health.reason.database_fails": "writes fail: {error}",
    "health.reason.escalation_ok": "no step overdue",
    "health.reason.escalation_overdue": "{count} overdue; oldest #{id} by {late} s",
    "health.reason.telegram_off": "bot off (TELEGRAM_BOT_TOKEN unset)",
    "health.reason.telegram_getme": "getMe failed: {error}",
    "health.reason.telegram_failing": "sending failing since {since}: {error}",
    "health.reason.telegram_ok": "{bot}, {queued} queued",
    "health.reason.open_p0": "; open P0 incident #{id}",
    "change.retries.none": "still open and not acknowledged",
    "error.not_trace_id": (
        "⚠️ <code>{value}</code> is not a trace id (like SF-20260130-091500-a1b2)"
    ),
    "error.no_trace": "⚠️ There is no trace <code>{value}</code>",
    "error.not_backup_id": (
        "⚠️ <code>{value}</code> is not a backup id (like 20260130-091500-a1b2)"
    ),
    "error.no_backup": "⚠️ There is no backup <code>{value}</code>; see /backup",
    "error.backup_corrupt": (
        "⚠️ Backup <code>{value}</code> is corrupt ({file}); restore another one"
    ),
    "error.no_job": "⚠️ There is no job #{id}",
    "error.not_job": "⚠️ <code>{value}</code> is not a job number",
    "error.expiry_days": "⚠️ The expiry is 1 to 365 days, not {value}",
    "error.caption": (
        "⚠️ Instagram does not take this caption (length {length}/{max_length}, hashtags "
        "{hashtags}/{max_hashtags}, mentions {mentions}/{max_mentions}; it must not be empty)"
    ),
    "error.not_set": "⚠️ {setting} is not set on the server",
    "notify.text": "SunFlow Ops test message from {actor} at {at}",
    "notify.reason.sent_to": "sent to {to}",
    "notify.reason.not_set": "{setting} is not set",
    "notify.reason.http": "HTTP {status}",
    "notify.reason.error": "failed: {error}",
    "job.line": "#{id} {work} · {state} {done}/{total}",
    "job.next": "next in {delta}",
    "job.state.failed": "failed",
    "job.state.running": "running",
    "job.state.succeeded": "succeeded",
    "job.state.exhausted": "retries spent",
    "trace.status.ok": "ok",
    "trace.status.error": "error",
    "trace.status.running": "running",
    "trace.status.skipped": "skipped",
    "backup.restored.text": (
        "♻️ Restored {id} ({files}); the state before is backup {snapshot}. "
        "Restart sunflow-ops serve to apply it."
    ),
    "backup.restored.nothing": "nothing to write",
    "error.job_running": "⚠️ Job #{id} is already running; it is not started twice",
    "error.job_succeeded": "⚠️ Job #{id} has already succeeded",
    "error.oncall_range": "⚠️ An on-call override lasts between 5 minutes and 30 days, e.g. 8h",
    # -- amgroup: an Alertmanager group's card --
    "card.alerts": "Alerts: {firing} firing, {resolved} resolved",
    "card.alerts.more": "  +{count} more (the whole list: <code>/api/incidents/{id}</code>)",
    # -- storm digests (branch digest) --
    "storm.title": "🌪 <b>Storm digest</b>: <b>{total}</b> alerts folded into this message",
    "storm.why": (
        "More new alerts than Telegram lets a group receive in a minute: they are counted "
        "here instead of posted one by one. P0 and P1 alerts still get their own card."
    ),
    "storm.severities": "By severity: {counts}",
    "storm.sources": "By source: {counts}",
    "storm.sources_other": "{count} more",
    "storm.states": (
        "Open {open} · resolved {resolved} · with their own card {carded} · "
        "{occurrences} occurrences in all"
    ),
    "storm.newest": "Newest:",
    "storm.line": "{badge} #{id} {title}",
    "storm.since": "Storm since {at}, last change {updated}: this message follows it.",
    "storm.closed": (
        "✅ Storm over ({since}–{at}): no new alerts fold in; the states still follow."
    ),
    "storm.button.list": "📋 List ({count})",
    "storm.button.entry": "{badge} #{id} {title}",
    "storm.button.prev": "◀ Newer",
    "storm.button.next": "Older ▶",
    "storm.list.title": (
        "🌪 <b>Storm digest</b>: alerts {first}–{last} of {total}, newest first. "
        "Tap one to post its own card."
    ),
    "storm.list.line": "{badge} #{id} {title} · {state}{carded}",
    "storm.list.carded": " · has its card",
    "storm.opened": "Posting the card of #{id}.",
    "storm.already": "#{id} already has its own card.",
    "storm.gone": "That storm digest no longer exists.",
    # The descriptions our own services write (`AlertIn.wording`): plain text, the values
    # as they are. The same English as the services' `description`.
    "desc.fal": (
        "fal.ai: {error}. The job retries {schedule}; the last retry posts an image from "
        "content/images/<topic>/archive/ if there is one. Check the fal.ai status page; "
        "retry: sunflow-ops generate <topic> --retry."
    ),
    "desc.fal_archive": (
        "fal.ai: {error}. The job retries {schedule}; the last retry posts an image from "
        "content/images/<topic>/archive/ if there is one. Check the fal.ai status page; "
        "retry: sunflow-ops generate <topic> --retry. Used the archive image {image} for "
        "this post."
    ),
    "desc.cloudinary": (
        "{error}. The local file is kept: {path}. Check CLOUDINARY_URL and the usage in the "
        "Cloudinary console; upload by hand: sunflow-ops upload {path}"
    ),
    "desc.instagram_429": (
        "{error}. The retries back off {schedule} (longer when Instagram asks); keep to one "
        "post a day (PUBLISH_DAILY_LIMIT)."
    ),
    "desc.instagram_429_after": (
        "{error}. Retry-After {wait} s. The retries back off {schedule} (longer when "
        "Instagram asks); keep to one post a day (PUBLISH_DAILY_LIMIT)."
    ),
    "desc.instagram_403": "{error}. The account cannot publish: check its permissions in Meta.",
    "desc.instagram_error": "{error}. The job retries {schedule}.",
    "desc.publish_blocked": "{error}. Fix it, then: sunflow-ops publish {topic} --retry",
    "desc.stats": (
        "{error}. Recover: sunflow-ops stats collect --force; sunflow-ops stats restart. The "
        "collect_stats job retries {schedule}."
    ),
    "desc.heartbeat": (
        "The heartbeat {name} expects a ping every {every} (grace {grace}); it was due at "
        "{due}. Its next ping resolves this incident: POST or GET /api/heartbeats/{name}/ping."
    ),
    "desc.database": "The database refuses writes: {error}",
    "desc.unauthorized": "{where} was refused (401 Unauthorized).\n\n{guide}",
    "desc.where.publishing": "publishing",
    "desc.where.stats collection": "stats collection",
}
