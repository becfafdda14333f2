"""Stack limits (Heat's defaults, [orchestration] options) and the policy of resource types."""

import json

import pytest

from jeroboam import config
from jeroboam.api.auth import RequestContext
from jeroboam.api.policy import Policy
from jeroboam.orchestration.engine import Engine
from jeroboam.orchestration.errors import TemplateError
from jeroboam.orchestration.store import MemoryStore
from jeroboam.orchestration.template import Limits, Template

from .helpers import hot, resources, run_create


def group(count, member=None) -> dict:
    return {"type": "OS::Heat::ResourceGroup",
            "properties": {"count": count, "resource_def": member or {"type": "OS::Heat::None"}}}


def refusal(template, limits=Limits()) -> str:
    with pytest.raises(TemplateError) as info:
        Template(template, limits).bind()
    return str(info.value)


def test_templates_larger_than_the_limit_are_refused_as_text_and_as_maps():
    small = Limits(max_template_bytes=200)
    big = hot({f"r{i}": {"type": "OS::Heat::None"} for i in range(10)})
    assert "larger than 200 bytes" in refusal(json.dumps(big), small)
    assert "larger than 200 bytes" in refusal(big, small)
    Template(big)  # within the default 512 KiB


def test_yaml_aliases_are_refused_and_asterisks_in_strings_are_not():
    aliased = "heat_template_version: 2018-08-31\nparameters:\n  a: &x {type: string}\n  b: *x\n"
    assert "YAML aliases (*name) are not supported" in refusal(aliased)
    plain = 'heat_template_version: 2018-08-31\nparameters:\n  a: {type: string, default: "*x"}\n'
    assert Template(plain).bind().params["a"] == "*x"


def test_group_members_count_toward_the_resource_limit():
    Template(hot({"g": group(1000)})).bind()  # a group counts as its members: 1000 fit
    assert "1001 resources" in refusal(hot({"g": group(1000), "one": {"type": "OS::Heat::None"}}))
    assert "2500 resources" in refusal(hot({"g": group(50, group(50))}))
    assert "a stack may have at most 3" in refusal(hot({"g": group(4)}), Limits(max_resources=3))


def test_members_nest_at_most_the_limit_deep():
    nested = {"type": "OS::Heat::None"}
    for _ in range(5):
        nested = group(1, nested)
    Template(hot({"g": nested})).bind()
    assert "nested more than 5 levels deep" in refusal(hot({"g": group(1, nested)}))
    assert "nested more than 1 levels deep" in refusal(hot({"g": group(1, group(1))}), Limits(max_depth=1))


def test_a_count_known_only_at_run_time_is_bounded_when_the_group_is_made():
    engine = Engine(MemoryStore(), limits=Limits(max_resources=5))
    template = hot({"n": {"type": "OS::Heat::TestResource", "properties": {"value": "9"}},
                    "g": {"type": "OS::Heat::ResourceGroup", "properties": {
                        "count": {"get_attr": ["n", "output"]}, "resource_def": {"type": "OS::Heat::None"}}}})
    stack = run_create(engine, template)
    assert stack.state == "CREATE_FAILED"
    assert "9 members would exceed the stack's limit of 5 resources" in stack.status_reason
    assert not [r for r in resources(engine.store, stack) if r.startswith("g/")]


def test_limits_come_from_the_settings():
    settings = config.load(environ={"JEROBOAM_ORCHESTRATION_MAX_RESOURCES_PER_STACK": "7",
                                    "JEROBOAM_ORCHESTRATION_MAX_TEMPLATE_SIZE": "1024",
                                    "JEROBOAM_ORCHESTRATION_MAX_NESTED_STACK_DEPTH": "2"})
    assert Limits.from_settings(settings) == Limits(7, 1024, 2)
    assert Limits.from_settings(config.load(environ={})) == Limits()


def ctx(roles, project="p"):
    return RequestContext(project_id=project, user_id="u", roles=frozenset(roles), request_id="r")


def test_resource_type_rules_default_by_plugin_and_yield_to_the_policy_file(tmp_path):
    member = ctx({"member", "reader"})
    default = Policy()
    assert default.allows("resource_types:OS::Heat::RandomString", member)
    assert default.allows("resource_types:DockerInc::Docker::Container", member)
    assert not default.allows("resource_types:Jeroboam::Local::Node", member)
    assert default.allows("resource_types:Jeroboam::Local::Node", ctx({"admin"}))
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text('"resource_types:OS::Heat::RandomString": "!"\n'
                           '"resource_types:Jeroboam::Local::Network": "role:member"\n')
    custom = Policy(config.load(environ={"JEROBOAM_OSLO_POLICY_POLICY_FILE": str(policy_file)}).conf)
    assert not custom.allows("resource_types:OS::Heat::RandomString", member)
    assert custom.allows("resource_types:Jeroboam::Local::Network", member)
