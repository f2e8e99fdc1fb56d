"""What an incident's card shows beyond the incident's own row: the next escalation step,
unticked checklist items, the retry plan of the jobs behind it, and its runbook."""

from __future__ import annotations

from typing import Any

from services.checklists import ChecklistService
from services.escalation import EscalationService
from services.incidents import IncidentService
from services.retry import RetryService
from services.runbooks import runbook_for

# The jobs a card lists (the newest; an incident of a provider outage may gather many).
MAX_CARD_JOBS = 3


class CardFacts:
    """Called by the outbox sender for each card it sends or edits (JSON for the renderer)."""

    def __init__(
        self,
        *,
        incidents: IncidentService,
        escalation: EscalationService,
        checklists: ChecklistService,
        retry: RetryService,
        runbook_base_url: str | None,
    ) -> None:
        self._incidents = incidents
        self._escalation = escalation
        self._checklists = checklists
        self._retry = retry
        self._runbook_base_url = runbook_base_url

    async def __call__(self, incident_id: int) -> dict[str, Any]:
        upcoming = await self._escalation.next_step_for(incident_id)
        checklist = await self._checklists.state(incident_id)
        jobs = await self._retry.jobs_for_incident(incident_id)
        view = (await self._incidents.get(incident_id)).incident
        runbook = runbook_for(
            labels=view.labels, dedup_key=view.dedup_key, base_url=self._runbook_base_url
        )
        return {
            "retries": [{**job.to_json(), "plan": job.plan()} for job in jobs[-MAX_CARD_JOBS:]],
            "runbook": runbook.to_json() if runbook else None,
            "next_step": {
                "name": upcoming.name,
                "target": upcoming.target,
                "due_at": upcoming.due_at.isoformat(),
            }
            if upcoming is not None
            else None,
            "checklist_open": len(checklist.open_items()),
        }
