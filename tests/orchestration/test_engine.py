"""Stack actions on the in-memory store: order, parallelism, update, rollback, failures, resume."""

import threading
import time
from collections import Counter

import pytest

from jeroboam.orchestration import resources as registry
from jeroboam.orchestration.engine import Engine
from jeroboam.orchestration.errors import StackConflict, StackNotFound, TemplateError
from jeroboam.orchestration.resources import heat
from jeroboam.orchestration.store import MemoryStore

from .helpers import (
    finished, hot, position, resource_events, resources, run_create, run_delete, run_update, started,
)


@registry.register
class BlockingSleeper(heat.TestResource):
    """A plugin whose create blocks its thread; counts how many run at once."""

    type_name = "Test::BlockingSleeper"
    blocking = True
    lock = threading.Lock()
    running = 0
    peak = 0

    def create(self):
        cls = type(self)
        with cls.lock:
            cls.running += 1
            cls.peak = max(cls.peak, cls.running)
        time.sleep(0.1)
        with cls.lock:
            cls.running -= 1
        return self.physical_name()


@registry.register
class CountingResource(heat.TestResource):
    """Counts create and delete handler calls per resource name; keeps the ids created."""

    type_name = "Test::Counting"
    creates: Counter = Counter()
    deletes: Counter = Counter()
    created_ids: dict = {}

    def create(self):
        type(self).creates[self.name] += 1
        physical_id = super().create()
        type(self).created_ids.setdefault(self.name, set()).add(physical_id)
        return physical_id

    def delete(self):
        type(self).deletes[self.name] += 1
        super().delete()


@registry.register
class FlakyDelete(heat.TestResource):
    """Delete fails while the resource's name is in `broken`."""

    type_name = "Test::FlakyDelete"
    broken: set = set()

    def check_delete_complete(self):
        if self.name in type(self).broken:
            raise RuntimeError("backend refused the delete")
        return True


@registry.register
class ImmutableZone(heat.TestResource):
    type_name = "Test::ImmutableZone"
    properties_schema = {**heat.TestResource.properties_schema, "properties": {
        **heat.TestResource.properties_schema["properties"], "zone": {"type": "string", "immutable": True}}}


def tr(value="test_string", **props):
    return {"type": "OS::Heat::TestResource", "properties": {"value": value, **props}}


E1 = {
    "heat_template_version": "2018-08-31",
    "resources": {
        "net": {"type": "OS::Heat::None"},
        "key": {"type": "OS::Heat::RandomString", "properties": {"length": 8}},
        "srv": {"type": "OS::Heat::TestResource", "depends_on": "net", "properties": {
            "value": {"str_replace": {"template": "k=$K", "params": {"$K": {"get_resource": "key"}}}},
            "wait_secs": 0.05}},
        "tail": {"type": "OS::Heat::None", "properties": {"x": {"get_attr": ["srv", "output"]}}},
    },
    "outputs": {"v": {"value": {"get_attr": ["srv", "output"]}}},
}


def test_create_and_delete_follow_dependency_order(engine, store):
    stack = run_create(engine, E1)
    assert stack.state == "CREATE_COMPLETE"
    assert stack.status_reason == "Stack CREATE completed successfully"
    ev = resource_events(store, stack)
    for first in ("net", "key"):
        assert finished(ev, first) < started(ev, "srv")
    assert finished(ev, "srv") < started(ev, "tail")
    (out,) = engine.outputs(stack)
    key = resources(store, stack)["key"].data["value"]
    assert len(key) == 8 and out["output_value"] == f"k={key}"
    assert all(r.state == "CREATE_COMPLETE" and r.physical_id for r in resources(store, stack).values())

    stack = run_delete(engine, stack)
    assert stack.state == "DELETE_COMPLETE"
    ev = resource_events(store, stack)
    assert finished(ev, "tail", "DELETE") < started(ev, "srv", "DELETE")
    for last in ("net", "key"):
        assert finished(ev, "srv", "DELETE") < started(ev, last, "DELETE")
    assert store.resources(stack.id) == []
    with pytest.raises(StackNotFound):
        engine.delete_stack(stack.id)


def test_events_one_per_state_change(engine, store):
    stack = run_create(engine, hot({f"r{i}": {"type": "OS::Heat::None"} for i in range(10)}))
    events = store.events(stack.id)
    assert len(events) == 22
    assert [e.state for e in events if e.resource_type == "OS::Heat::Stack"] == ["CREATE_IN_PROGRESS",
                                                                                "CREATE_COMPLETE"]
    assert {e.physical_resource_id for e in events if e.resource_name == "r0" and e.state == "CREATE_COMPLETE"} == \
        {resources(store, stack)["r0"].physical_id}


def test_independent_resources_run_in_parallel(engine, store):
    t0 = time.monotonic()
    stack = run_create(engine, hot({f"t{i}": tr(wait_secs=0.2) for i in range(20)}))
    elapsed = time.monotonic() - t0
    assert stack.state == "CREATE_COMPLETE"
    assert elapsed < 1.0, elapsed  # serially it would take 4 s
    ev = resource_events(store, stack)
    last_start = max(started(ev, f"t{i}") for i in range(20))
    first_finish = min(finished(ev, f"t{i}") for i in range(20))
    assert last_start < first_finish


def test_blocking_handlers_are_bounded_by_the_concurrency_cap(store):
    BlockingSleeper.peak = 0
    engine = Engine(store, concurrency=4)
    t0 = time.monotonic()
    stack = run_create(engine, hot({f"b{i}": {"type": "Test::BlockingSleeper"} for i in range(12)}))
    elapsed = time.monotonic() - t0
    assert stack.state == "CREATE_COMPLETE"
    assert BlockingSleeper.peak == 4
    assert 0.28 < elapsed < 1.0, elapsed  # three waves of four 0.1 s calls


def test_chain_runs_one_after_another(engine, store):
    stack = run_create(engine, hot({
        f"c{i}": {**tr(wait_secs=0.02), **({"depends_on": f"c{i - 1}"} if i else {})} for i in range(5)}))
    ev = resource_events(store, stack)
    for i in range(1, 5):
        assert finished(ev, f"c{i - 1}") < started(ev, f"c{i}")


# ------------------------------------------------------------------- update

def test_update_in_place_keeps_the_physical_resource(engine, store):
    stack = run_create(engine, hot({"a": tr("x"), "same": tr("s")}))
    before = resources(store, stack)
    n_events = len(store.events(stack.id))
    stack = run_update(engine, stack, hot({"a": tr("y"), "same": tr("s")}))
    assert stack.state == "UPDATE_COMPLETE"
    after = resources(store, stack)
    assert after["a"].physical_id == before["a"].physical_id
    assert after["a"].state == "UPDATE_COMPLETE"
    assert after["a"].attributes == {"output": "y"}
    new_events = resource_events(store, stack)[n_events - 2:]
    assert ("a", "UPDATE_IN_PROGRESS") in new_events
    assert all(name != "same" for name, _ in new_events)  # unchanged: untouched, no event
    assert after["same"].state == "CREATE_COMPLETE"


def test_replacement_creates_new_before_deleting_old(engine, store):
    old = hot({"a": tr("x", update_replace=True),
               "b": {"type": "OS::Heat::TestResource", "properties": {"value": {"get_resource": "a"}}}})
    stack = run_create(engine, old)
    before = resources(store, stack)
    new = hot({"a": tr("y", update_replace=True),
               "b": {"type": "OS::Heat::TestResource", "properties": {"value": {"get_resource": "a"}}},
               "c": {"type": "OS::Heat::None"}})
    n = len(resource_events(store, stack))
    stack = run_update(engine, stack, new)
    assert stack.state == "UPDATE_COMPLETE"
    after = resources(store, stack)
    assert after["a"].physical_id != before["a"].physical_id
    assert after["b"].physical_id == before["b"].physical_id  # b updated in place...
    assert after["b"].attributes["output"] == after["a"].physical_id  # ...to reference the new a
    assert set(after) == {"a", "b", "c"} and len(store.resources(stack.id)) == 3
    ev = resource_events(store, stack)[n:]
    new_a_done = position(ev, "a", "CREATE_COMPLETE")
    assert new_a_done < started(ev, "b", "UPDATE") < finished(ev, "b", "UPDATE") < started(ev, "a", "DELETE")
    assert ev[-1] == ("a", "DELETE_COMPLETE")


def test_update_adds_and_removes_resources(engine, store):
    stack = run_create(engine, hot({"keep": tr(), "old": tr(), "older": {
        "type": "OS::Heat::TestResource", "properties": {"value": {"get_attr": ["old", "output"]}}}}))
    stack = run_update(engine, stack, hot({"keep": tr(), "new": tr()}))
    assert stack.state == "UPDATE_COMPLETE"
    assert set(resources(store, stack)) == {"keep", "new"}
    ev = resource_events(store, stack)
    assert finished(ev, "older", "DELETE") < started(ev, "old", "DELETE")


def test_update_from_dev_to_prod_creates_then_updates(engine, store):
    from .test_template import E2
    stack = run_create(engine, E2)
    assert set(resources(store, stack)) == {"app"}
    app_id = resources(store, stack)["app"].physical_id
    stack = run_update(engine, stack, params={"env": "prod"})
    assert stack.state == "UPDATE_COMPLETE"
    current = resources(store, stack)
    assert current["app"].physical_id == app_id
    assert current["app"].attributes["output"] == current["db"].physical_id
    ev = resource_events(store, stack)
    assert finished(ev, "db") < started(ev, "app", "UPDATE")
    outputs = {o["output_key"]: o["output_value"] for o in engine.outputs(stack)}
    assert outputs["db_id"] == current["db"].physical_id


def test_none_resource_ignores_changes(engine, store):
    stack = run_create(engine, hot({"n": {"type": "OS::Heat::None", "properties": {"a": 1}}}))
    pid = resources(store, stack)["n"].physical_id
    stack = run_update(engine, stack, hot({"n": {"type": "OS::Heat::None", "properties": {"a": 2}}}))
    assert resources(store, stack)["n"].physical_id == pid
    assert not [e for e in resource_events(store, stack) if e[1].startswith("UPDATE")]


def test_random_string_is_replaced_when_a_property_changes(engine, store):
    stack = run_create(engine, hot({"r": {"type": "OS::Heat::RandomString", "properties": {"salt": "1"}}}))
    first = resources(store, stack)["r"].data["value"]
    assert len(first) == 32
    stack = run_update(engine, stack, hot({"r": {"type": "OS::Heat::RandomString", "properties": {"salt": "2"}}}))
    assert resources(store, stack)["r"].data["value"] != first


def test_an_immutable_property_change_fails_the_update(engine, store):
    stack = run_create(engine, hot({"z": {"type": "Test::ImmutableZone", "properties": {"zone": "a"}}}))
    pid = resources(store, stack)["z"].physical_id
    stack = run_update(engine, stack, hot({"z": {"type": "Test::ImmutableZone", "properties": {"zone": "b"}}}))
    assert stack.state == "UPDATE_FAILED"
    assert "resources.z.properties.zone: cannot be changed (immutable)" in stack.status_reason
    assert [r.physical_id for r in store.resources(stack.id)] == [pid]  # not replaced either


def test_update_validation_and_conflicts(engine, store):
    template = hot({"a": tr()}, parameters={"zone": {"type": "string", "immutable": True, "default": "z1"}})
    stack = run_create(engine, template)
    with pytest.raises(TemplateError) as info:
        engine.update_stack(stack.id, None, {"zone": "z2"})
    assert info.value.path == "parameters.zone"
    with pytest.raises(TemplateError) as info:
        engine.update_stack(stack.id, hot({"a": {"type": "OS::Heat::TestResource", "properties": {"valu": 1}}}))
    assert info.value.path == "resources.a.properties.valu"
    assert store.get_stack(stack.id).state == "CREATE_COMPLETE"  # a refused update changes nothing
    engine.update_stack(stack.id, hot({"a": tr("new")}))
    with pytest.raises(StackConflict):
        engine.update_stack(stack.id, hot({"a": tr("newer")}))
    with pytest.raises(StackConflict):
        engine.delete_stack(stack.id)
    assert engine.run(stack.id).state == "UPDATE_COMPLETE"


def test_patch_keeps_parameters_put_resets_them(engine, store):
    template = hot({"a": {"type": "OS::Heat::TestResource", "properties": {"value": {"get_param": "v"}}}},
                   parameters={"v": {"type": "string", "default": "dflt"}, "w": {"type": "string", "default": ""}})
    stack = run_create(engine, template, {"v": "mine"})
    stack = run_update(engine, stack, params={"w": "x"})
    assert resources(store, stack)["a"].attributes["output"] == "mine"
    stack = run_update(engine, stack, template, {"w": "y"}, existing=False)
    assert resources(store, stack)["a"].attributes["output"] == "dflt"


# ----------------------------------------------------------- failure, rollback

E6 = hot({"x": tr(fail=True), "y": {"type": "OS::Heat::None"}})


def test_failed_create_without_rollback_stays_failed(engine, store):
    stack = run_create(engine, E6)
    assert stack.state == "CREATE_FAILED"
    assert stack.status_reason == "Resource CREATE failed: ValueError: resources.x: Test Resource failed x"
    current = resources(store, stack)
    assert current["x"].state == "CREATE_FAILED"
    assert current["y"].state == "CREATE_COMPLETE"
    stack = run_delete(engine, stack)  # allowed from a failed state
    assert stack.state == "DELETE_COMPLETE"


def test_failed_create_rolls_back_when_enabled(engine, store):
    stack = run_create(engine, E6, disable_rollback=False)
    assert stack.state == "ROLLBACK_COMPLETE"
    assert stack.status_reason == "Stack ROLLBACK completed successfully"
    assert store.resources(stack.id) == []
    stack_states = [e.state for e in store.events(stack.id) if e.resource_type == "OS::Heat::Stack"]
    assert stack_states == ["CREATE_IN_PROGRESS", "CREATE_FAILED", "ROLLBACK_IN_PROGRESS", "ROLLBACK_COMPLETE"]


def test_after_a_failure_nothing_new_starts(engine, store):
    stack = run_create(engine, hot({"x": tr(fail=True), "later": {**tr(), "depends_on": "y"},
                                    "y": tr(wait_secs=0.1)}))
    current = resources(store, stack)
    assert current["y"].state == "CREATE_COMPLETE"  # already running: allowed to finish
    assert current["later"].state == "INIT_COMPLETE"


def test_failed_update_rolls_back_to_the_previous_template(engine, store):
    old = hot({"a": tr("v1", update_replace=True), "b": tr("b1")})
    stack = run_create(engine, old, disable_rollback=False)
    before = resources(store, stack)
    stack = run_update(engine, stack, hot({"a": tr("v2", update_replace=True), "b": tr("b2"),
                                           "bad": {**tr(fail=True), "depends_on": ["a", "b"]}}))
    assert stack.state == "ROLLBACK_COMPLETE"
    after = resources(store, stack)
    assert set(after) == {"a", "b"} and len(store.resources(stack.id)) == 2
    # The replaced copy of a is current again; b was updated back in place.
    assert after["a"].physical_id == before["a"].physical_id
    assert after["b"].physical_id == before["b"].physical_id
    assert after["b"].attributes["output"] == "b1"
    assert stack.template == old
    ev = resource_events(store, stack)
    assert ("b", "ROLLBACK_COMPLETE") in ev


def test_failed_update_without_rollback_can_be_fixed_by_another_update(engine, store):
    stack = run_create(engine, hot({"a": tr()}))
    stack = run_update(engine, stack, hot({"a": tr(fail=True)}))
    assert stack.state == "UPDATE_FAILED"
    assert resources(store, stack)["a"].state == "UPDATE_FAILED"
    stack = run_update(engine, stack, hot({"a": tr("fixed")}))
    assert stack.state == "UPDATE_COMPLETE"
    assert resources(store, stack)["a"].attributes["output"] == "fixed"  # a FAILED resource is replaced
    assert len(store.resources(stack.id)) == 1


def test_failed_delete_names_the_resource_and_a_retry_resumes(engine, store):
    FlakyDelete.broken.add("mid")
    stack = run_create(engine, hot({
        "base": tr(),
        "mid": {"type": "Test::FlakyDelete", "properties": {"value": {"get_resource": "base"}}},
        "top": {"type": "OS::Heat::TestResource", "properties": {"value": {"get_resource": "mid"}}},
    }))
    stack = run_delete(engine, stack)
    assert stack.state == "DELETE_FAILED"
    assert "resources.mid" in stack.status_reason and "backend refused" in stack.status_reason
    current = resources(store, stack)
    assert set(current) == {"base", "mid"}  # top deleted; base waits for mid
    assert current["mid"].state == "DELETE_FAILED"
    FlakyDelete.broken.clear()
    stack = run_delete(engine, stack)
    assert stack.state == "DELETE_COMPLETE"
    assert store.resources(stack.id) == []


def test_retain_policy_skips_the_delete_handler(engine, store):
    CountingResource.deletes.clear()
    stack = run_create(engine, hot({"kept": {"type": "Test::Counting", "deletion_policy": "Retain"},
                                    "gone": {"type": "Test::Counting"}}))
    stack = run_delete(engine, stack)
    assert stack.state == "DELETE_COMPLETE"
    assert CountingResource.deletes["kept"] == 0 and CountingResource.deletes["gone"] == 1


def test_stack_timeout(engine, store):
    stack = run_create(engine, hot({"slow": tr(wait_secs=30), "quick": tr()}), timeout_mins=0.005)
    assert stack.state == "CREATE_FAILED"
    assert stack.status_reason == "Create timed out"
    assert resources(store, stack)["slow"].state == "CREATE_FAILED"


def test_cancel_stops_the_action_without_rollback(engine, store):
    stack = engine.create_stack("s", hot({"slow": tr(wait_secs=30)}), disable_rollback=False)
    t0 = time.monotonic()
    stack = engine.run(stack.id, cancel=lambda: time.monotonic() - t0 > 0.2)
    assert time.monotonic() - t0 < 2
    assert stack.state == "CREATE_FAILED"
    assert "cancelled" in stack.status_reason
    assert resources(store, stack)["slow"].state == "CREATE_FAILED"


def test_resolution_errors_fail_the_resource_with_its_path(engine, store):
    # Valid statically (the attribute is unknown until a runs), invalid once resolved.
    stack = run_create(engine, hot({
        "a": tr("not a number"),
        "r": {"type": "OS::Heat::RandomString", "properties": {"length": {"get_attr": ["a", "output"]}}},
    }))
    assert stack.state == "CREATE_FAILED"
    assert "resources.r.properties.length" in stack.status_reason


# ------------------------------------------------------------ ResourceGroup

def group(count, **extra):
    return hot({
        "grp": {"type": "OS::Heat::ResourceGroup", "properties": {
            "count": count, "resource_def": {"type": "OS::Heat::TestResource",
                                             "properties": {"value": "node-%index%"}}, **extra}},
        "after": {"type": "OS::Heat::None", "properties": {"ids": {"get_attr": ["grp", "refs"]}}},
    }, outputs={"values": {"value": {"get_attr": ["grp", "output"]}},
                "one": {"value": {"get_attr": ["grp", "resource.1.output"]}},
                "removed": {"value": {"get_attr": ["grp", "removed_rsrc_list"]}}})


def outputs_of(engine, stack):
    return {o["output_key"]: o["output_value"] for o in engine.outputs(stack)}


def test_resource_group_create_shrink_and_removal_policies(engine, store):
    stack = run_create(engine, group(3))
    assert stack.state == "CREATE_COMPLETE"
    assert outputs_of(engine, stack)["values"] == ["node-0", "node-1", "node-2"]
    assert outputs_of(engine, stack)["one"] == "node-1"
    ev = resource_events(store, stack)
    assert max(finished(ev, f"grp/{i}") for i in range(3)) < finished(ev, "grp") < started(ev, "after")

    stack = run_update(engine, stack, group(2))
    assert sorted(n for n in resources(store, stack) if n.startswith("grp/")) == ["grp/0", "grp/1"]
    assert outputs_of(engine, stack)["values"] == ["node-0", "node-1"]

    stack = run_update(engine, stack, group(3))
    ids = {n: r.physical_id for n, r in resources(store, stack).items()}
    stack = run_update(engine, stack, group(3, removal_policies=[{"resource_list": ["0"]}]))
    current = resources(store, stack)
    assert sorted(n for n in current if n.startswith("grp/")) == ["grp/1", "grp/2", "grp/3"]
    assert current["grp/1"].physical_id == ids["grp/1"]  # untouched members keep their resources
    assert outputs_of(engine, stack)["values"] == ["node-1", "node-2", "node-3"]
    assert outputs_of(engine, stack)["removed"] == ["0"]
    # "0" is never reused, even when the group grows again.
    stack = run_update(engine, stack, group(4, removal_policies=[{"resource_list": ["0"]}]))
    assert outputs_of(engine, stack)["values"] == ["node-1", "node-2", "node-3", "node-4"]

    stack = run_delete(engine, stack)
    assert stack.state == "DELETE_COMPLETE" and store.resources(stack.id) == []


def test_resource_group_member_definition_change_updates_members(engine, store):
    stack = run_create(engine, group(2))
    ids = {n: r.physical_id for n, r in resources(store, stack).items()}
    changed = group(2)
    changed["resources"]["grp"]["properties"]["resource_def"]["properties"]["value"] = "v2-%index%"
    stack = run_update(engine, stack, changed)
    assert outputs_of(engine, stack)["values"] == ["v2-0", "v2-1"]
    assert resources(store, stack)["grp/0"].physical_id == ids["grp/0"]  # value is update_allowed


def test_resource_group_member_errors_are_located():
    from jeroboam.orchestration.template import Template
    template = group(1)
    template["resources"]["grp"]["properties"]["resource_def"]["properties"]["valu"] = 1
    with pytest.raises(TemplateError) as info:
        Template(template).bind()
    assert info.value.path == "resources.grp.properties.resource_def.properties.valu"


# ------------------------------------------------------------------- resume

class Crash(BaseException):
    """Stands for the worker dying: nothing in the engine catches it."""


class CrashingStore(MemoryStore):
    """Saves normally until `crash_after` saves, then dies on the next one."""

    def __init__(self):
        super().__init__()
        self.crash_after = None

    def save(self, *args):
        if self.crash_after is not None:
            if self.crash_after == 0:
                raise Crash()
            self.crash_after -= 1
        super().save(*args)


def test_a_create_interrupted_mid_way_is_finished_without_redoing_work():
    CountingResource.creates.clear()
    CountingResource.created_ids.clear()
    store = CrashingStore()
    template = hot({
        **{f"w{i}": {"type": "Test::Counting", "properties": {"wait_secs": 0.3}} for i in range(5)},
        "quick": {"type": "Test::Counting"},
        "after": {"type": "Test::Counting", "depends_on": ["w0", "quick"]},
    })
    stack = Engine(store).create_stack("s", template)
    store.crash_after = 1  # the first batch (ids recorded, waiting) is saved, the next one is not
    with pytest.raises(Crash):
        Engine(store).run(stack.id)
    stored = {r.name: r for r in store.resources(stack.id)}
    assert {stored[f"w{i}"].state for i in range(5)} == {"CREATE_IN_PROGRESS"}
    assert all(stored[f"w{i}"].physical_id for i in range(5))
    assert stored["quick"].state == "CREATE_COMPLETE"
    assert stored["after"].state == "INIT_COMPLETE"
    ids = {n: r.physical_id for n, r in stored.items()}

    store.crash_after = None
    stack = Engine(store).run(stack.id)  # "another worker"
    assert stack.state == "CREATE_COMPLETE"
    final = {r.name: r for r in store.resources(stack.id)}
    assert all(final[n].physical_id == ids[n] for n in ids if ids[n])
    # Handlers whose result was recorded ran once; "after" was created in the
    # batch that was lost, so its create ran again, and found the same resource.
    assert all(CountingResource.creates[n] == 1 for n in ids if ids[n]), CountingResource.creates
    assert CountingResource.creates["after"] == 2
    assert CountingResource.created_ids["after"] == {final["after"].physical_id}
    assert len(final) == 7
    ev = resource_events(store, stack)
    assert sum(1 for e in ev if e == ("w0", "CREATE_IN_PROGRESS")) == 1


def test_an_interrupted_delete_is_finished():
    store = CrashingStore()
    engine = Engine(store)
    stack = run_create(engine, hot({f"r{i}": tr(wait_secs=0.0) for i in range(3)} | {
        "slow": {"type": "OS::Heat::TestResource", "properties": {"action_wait_secs": {"delete": 0.3}}}}))
    engine.delete_stack(stack.id)
    store.crash_after = 1
    with pytest.raises(Crash):
        engine.run(stack.id)
    assert store.get_stack(stack.id).state == "DELETE_IN_PROGRESS"
    assert [r.state for r in store.resources(stack.id)] == ["DELETE_IN_PROGRESS"]
    store.crash_after = None
    stack = Engine(store).run(stack.id)
    assert stack.state == "DELETE_COMPLETE" and store.resources(stack.id) == []
