"""services.grants: a page grants its incident to the people it names, until it resolves."""

from __future__ import annotations

from services.config import Settings
from services.container import Services
from services.grants import GrantService
from services.incident_types import AlertIn, ChangeKind, IncidentChange
from services.main import open_services
from services.severity import Severity


async def page(services: Services, incident_id: int, user_ids: list[object]) -> None:
    view = (await services.incidents.get(incident_id)).incident
    await services.incidents.write(
        lambda w: w.record(
            [
                IncidentChange(
                    ChangeKind.ESCALATED,
                    view,
                    "escalation",
                    w.now,
                    {"step": "pd", "target": "pd", "user_ids": user_ids, "message": "paged"},
                )
            ]
        )
    )


async def test_a_page_grants_until_the_incident_resolves(settings: Settings) -> None:
    async with open_services(settings) as services:
        grants: GrantService = services.grants
        first = await services.incidents.trigger(AlertIn(Severity.P1, "Generation down", "g"))
        other = await services.incidents.trigger(AlertIn(Severity.P2, "Stats late", "s"))
        incident_id, other_id = first.incident.id, other.incident.id
        assert not await grants.holds(7005, incident_id)

        # Ids as the policy may give them; anything that is not an id grants nothing.
        await page(services, incident_id, [7005, "7006", "@nobody", None])
        assert await grants.holds(7005, incident_id)
        assert await grants.holds(7006, incident_id)
        assert not await grants.holds(7005, other_id)  # per incident
        await page(services, incident_id, [7005])  # paged again: still one grant
        assert [g.user_id for g in await grants.of_incident(incident_id)] == [7005, 7006]

        await services.incidents.resolve(incident_id, actor="cli:kim")
        assert not await grants.holds(7005, incident_id)
        ended = await grants.of_incident(incident_id)
        assert all(g.ended_at is not None and not g.active for g in ended)

        # Reopened: nothing until it pages again; then the grant starts afresh.
        await services.incidents.reopen(incident_id, actor="cli:kim")
        assert not await grants.holds(7005, incident_id)
        await page(services, incident_id, [7005])
        assert await grants.holds(7005, incident_id)
        assert not await grants.holds(7006, incident_id)
