"""The texts services write themselves, in English: the words the chat and the documents share
(severities, timeline entries), post-mortems, checklists, the token guide and the weekly
report. The chat's own messages are the bot's catalogue (bot/locales), which takes the shared
words from here."""

TEXTS: dict[str, str] = {
    # Shared with the chat (bot/locales takes every key starting with one of SHARED).
    "severity.meaning.P0": "service down",
    "severity.meaning.P1": "major feature failure",
    "severity.meaning.P2": "partial failure",
    "severity.meaning.P3": "minor issue",
    "kind.triggered": "triggered",
    "kind.deduplicated": "seen again",
    "kind.acknowledged": "acknowledged",
    "kind.resolved": "resolved",
    "kind.reopened": "reopened",
    "kind.annotated": "note",
    "kind.snoozed": "snoozed",
    "kind.unacknowledged": "acknowledgement ran out",
    "kind.escalated": "escalated",
    "kind.deadline_missed": "deadline missed",
    "kind.checklist": "checklist",
    "kind.postmortem": "post-mortem",
    # Who acted, when it is one of our services (people are named as they are).
    "actor.intake": "intake",
    "actor.escalation": "escalation",
    "actor.health_check": "health check",
    "actor.token_monitor": "token monitor",
    "actor.stats_collector": "stats collector",
    "actor.retry": "retry",
    "actor.pipeline": "pipeline",
    "actor.publish": "publish",
    "actor.cli": "CLI",
    # Post-mortems (services/postmortem.py).
    "postmortem.title": "Post-mortem: incident #{id} — {title}",
    "postmortem.severity": "Severity",
    "postmortem.source": "Source",
    "postmortem.state": "State",
    "postmortem.summary": "Summary",
    "postmortem.time": "1. Incident time",
    "postmortem.started": "Started (first alert)",
    "postmortem.acknowledged": "Acknowledged",
    "postmortem.resolved": "Resolved",
    "postmortem.tta": "Time to acknowledge",
    "postmortem.ttr": "Time to resolve",
    "postmortem.deadline": "Response deadline",
    "postmortem.deadline_missed": "missed",
    "postmortem.deadline_met": "met",
    "postmortem.impact": "2. Impact",
    "postmortem.occurrences": "Alert occurrences",
    "postmortem.jobs": "Affected jobs",
    "postmortem.traces": "Traces",
    "postmortem.impact_people": "Users and work affected",
    "postmortem.cause": "3. Root cause",
    "postmortem.recovery": "4. Recovery steps",
    "postmortem.prevention": "5. Prevention",
    "postmortem.checklists": "Checklists",
    "postmortem.unticked": "not done",
    "postmortem.missing": "_(to be filled in: reply `/postmortem {id} {field} TEXT`)_",
    "postmortem.none": "none recorded",
    "postmortem.not_yet": "not yet",
    "postmortem.state.triggered": "triggered",
    "postmortem.state.acknowledged": "acknowledged",
    "postmortem.state.resolved": "resolved",
    "postmortem.late_by": " (late by {seconds} s)",
    "postmortem.repeated": "seen again (count {count})",
    # Checklists and their items (services/checklists.py).
    "checklist.during": "During the incident",
    "checklist.recovery": "On recovery",
    "checklist.health_check": "Run the health check",
    "checklist.error_logs": "Check the error logs",
    "checklist.trace_ids": "Collect the trace ids",
    "checklist.recovery_attempt": "Attempt recovery",
    "checklist.verification": "Verification test",
    "checklist.postmortem": "Post-mortem",
    "checklist.normal_operation": "Normal operation confirmed",
    "checklist.queued_work": "Queued work processed",
    "checklist.notification": "Notification sent",
    "checklist.documented": "Documented",
    # The weekly report's summary (services/reports.py).
    "report.title": "Weekly incident report",
    "report.incidents": "Incidents: {total} ({by_severity})",
    "report.times": (
        "{severity}: ack mean {ack_mean}, p90 {ack_p90}; "
        "resolve mean {resolve_mean}, p90 {resolve_p90}"
    ),
    "report.missed": "Deadlines missed: {count}",
    "report.open": "Still open: {count}",
    "report.noisiest": "Noisiest alerts:",
    # The token renewal guide (services/tokens.py): the playbook's steps.
    "token.guide": """Renewing the Instagram access token
1. Check the status: sunflow-ops token status (bot: /token)
2. Issue a new long-lived token in the Meta developer console
   (https://developers.facebook.com/apps -> your app -> Instagram -> API setup),
   or exchange a short-lived one: GET /oauth/access_token?grant_type=fb_exchange_token
3. Update .env: INSTAGRAM_ACCESS_TOKEN="<new token>", then restart sunflow-ops serve
4. Register the expiry: sunflow-ops token set-expiry 60 (bot: /token set_expiry 60)
5. Retry publishing: sunflow-ops publish <topic> --retry (bot: /retry)
6. Verify: sunflow-ops health and sunflow-ops publish <topic> --dry-run""",
}
