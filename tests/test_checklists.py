from datetime import UTC, datetime

import pytest

from services.checklists import CHECKLISTS, label
from services.container import Services
from services.errors import InvalidInput, NotFound
from services.incident_types import AlertIn
from services.severity import Severity


async def new_incident(services: Services) -> int:
    result = await services.incidents.trigger(AlertIn(Severity.P1, "t", "k", "test"))
    return result.incident.id


async def test_fresh_incident_has_every_item_open(services: Services) -> None:
    incident_id = await new_incident(services)
    state = await services.checklists.state(incident_id)
    assert [(i.checklist, i.item) for i in state.items] == [
        (name, item) for name, items in CHECKLISTS.items() for item in items
    ]
    assert state.counts("during") == (0, 6)
    assert state.counts("recovery") == (0, 4)


async def test_tick_untick_is_on_the_timeline(services: Services) -> None:
    incident_id = await new_incident(services)
    await services.checklists.set(incident_id, "during", "health_check", done=True, actor="kim")
    state = await services.checklists.toggle(incident_id, "during", "trace_ids", actor="lee")
    assert state.counts("during") == (2, 6)
    ticked = {i.item: i for i in state.items if i.done}
    assert ticked["health_check"].actor == "kim"
    assert isinstance(ticked["trace_ids"].at, datetime)
    assert ticked["trace_ids"].at.tzinfo == UTC
    state = await services.checklists.toggle(incident_id, "during", "trace_ids", actor="lee")
    assert state.counts("during") == (1, 6)
    detail = await services.incidents.get(incident_id)
    ticks = [(e.actor, e.details) for e in detail.timeline if e.kind == "checklist"]
    assert ticks == [
        ("kim", {"checklist": "during", "item": "health_check", "done": True}),
        ("lee", {"checklist": "during", "item": "trace_ids", "done": True}),
        ("lee", {"checklist": "during", "item": "trace_ids", "done": False}),
    ]


@pytest.mark.parametrize(
    ("checklist", "item", "message"),
    [("after", "x", "unknown checklist"), ("during", "coffee", "unknown item 'coffee'")],
)
async def test_unknown_items(services: Services, checklist: str, item: str, message: str) -> None:
    incident_id = await new_incident(services)
    with pytest.raises(InvalidInput, match=message):
        await services.checklists.set(incident_id, checklist, item, done=True, actor="a")


async def test_unknown_incident(services: Services) -> None:
    with pytest.raises(NotFound):
        await services.checklists.state(404)
    with pytest.raises(NotFound):
        await services.checklists.set(404, "during", "health_check", done=True, actor="a")


def test_labels_in_both_languages() -> None:
    for items in CHECKLISTS.values():
        for item in items:
            assert label(item, "ko") != item
            assert label(item, "en") != item
    assert label("trace_ids", "ko") == "트레이스 ID 수집"
