"""Shared helpers for orchestration tests."""

from jeroboam.orchestration.store import COMPLETE, IN_PROGRESS


def hot(resources=None, **sections):
    return {"heat_template_version": "2021-04-16", "resources": resources or {}, **sections}


def run_create(engine, template, params=None, name="s", **kwargs):
    stack = engine.create_stack(name, template, params, **kwargs)
    return engine.run(stack.id)


def run_update(engine, stack, template=None, params=None, **kwargs):
    engine.update_stack(stack.id, template, params, **kwargs)
    return engine.run(stack.id)


def run_delete(engine, stack):
    engine.delete_stack(stack.id)
    return engine.run(stack.id)


def resources(store, stack):
    """Current resources by name."""
    return {r.name: r for r in store.resources(stack.id) if r.replaced_by is None}


def resource_events(store, stack):
    """(name, ACTION_STATUS) of every resource event, in order."""
    return [(e.resource_name, e.state) for e in store.events(stack.id) if e.resource_type != "OS::Heat::Stack"]


def position(events, name, state, nth=0):
    hits = [i for i, e in enumerate(events) if e == (name, state)]
    assert len(hits) > nth, f"no {name} {state} in {events}"
    return hits[nth]


def started(events, name, action="CREATE"):
    return position(events, name, f"{action}_{IN_PROGRESS}")


def finished(events, name, action="CREATE"):
    return position(events, name, f"{action}_{COMPLETE}")
