"""Template parsing, validation with located errors, parameters, conditions, functions."""

import pytest

from jeroboam.orchestration.engine import StackView
from jeroboam.orchestration.errors import TemplateError
from jeroboam.orchestration.store import COMPLETE, CREATE, ResourceRecord
from jeroboam.orchestration.template import Template

from .helpers import hot


def bind(template, params=None, **kwargs):
    return Template(template).bind(params, **kwargs)


def error_of(template, params=None) -> TemplateError:
    with pytest.raises(TemplateError) as info:
        bind(template, params)
    return info.value


def view_of(**records):
    """A StackView where each name has a completed record with the given attributes."""
    current = {}
    for name, (type_name, physical_id, attributes) in records.items():
        current[name] = ResourceRecord(id=name, stack_id="s", name=name, type=type_name, action=CREATE,
                                       status=COMPLETE, physical_id=physical_id, attributes=attributes)
    return StackView(current)


def outputs(template, params=None, view=None):
    bound = bind(template, params)
    return {o["output_key"]: o for o in bound.outputs(view or StackView({}))}


def test_yaml_dates_stay_strings_and_json_text_is_accepted():
    text = "heat_template_version: 2018-08-31\nparameters:\n  d: {type: string, default: 2020-01-02}\n"
    tmpl = Template(text)
    assert tmpl.version == "2018-08-31"
    assert tmpl.bind().params["d"] == "2020-01-02"
    assert Template('{"heat_template_version": "newton"}').version == "2016-10-14"
    import yaml
    assert Template(yaml.safe_load(text)).bind().params["d"] == "2020-01-02"  # a map with date objects


@pytest.mark.parametrize("template, path", [
    ({"resources": {}}, "heat_template_version"),
    ({"heat_template_version": "2099-01-01"}, "heat_template_version"),
    (hot(extra=1), "extra"),
    ("heat_template_version: [unclosed", "template"),
    ("- a list", "template"),
    (hot({"web": {"type": "OS::Heat::None", "propertes": {}}}), "resources.web.propertes"),
    (hot({"web": {"type": "No::Such::Type"}}), "resources.web.type"),
    (hot({"web": {"type": "OS::Heat::None", "depends_on": "ghost"}}), "resources.web.depends_on"),
    (hot({"web": {"type": "OS::Heat::None", "deletion_policy": "Keep"}}), "resources.web.deletion_policy"),
    (hot({"a/b": {"type": "OS::Heat::None"}}), "resources.a/b"),
    (hot(outputs={"o": {"description": "no value"}}), "outputs.o.value"),
    ({"heat_template_version": "2015-10-15", "conditions": {}}, "conditions"),
])
def test_structural_errors_name_their_place(template, path):
    with pytest.raises(TemplateError) as info:
        Template(template)
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: ")


def test_lowercase_deletion_policy_needs_2016_10_14():
    Template(hot({"r": {"type": "OS::Heat::None", "deletion_policy": "retain"}}))
    with pytest.raises(TemplateError, match="resources.r.deletion_policy"):
        Template({"heat_template_version": "2015-10-15",
                  "resources": {"r": {"type": "OS::Heat::None", "deletion_policy": "retain"}}})


# ---------------------------------------------------------------- parameters

def test_parameter_coercion_by_type():
    params = {
        "s": {"type": "string"}, "n": {"type": "number"}, "f": {"type": "number"},
        "b": {"type": "boolean"}, "l": {"type": "comma_delimited_list"}, "e": {"type": "comma_delimited_list"},
        "j": {"type": "json"},
    }
    values = bind(hot(parameters=params), {"s": 5, "n": "7", "f": "2.5", "b": "Off", "l": "a, b,c", "e": "",
                                           "j": '{"k": [1]}'}).params
    assert values["s"] == "5"
    assert values["n"] == 7 and isinstance(values["n"], int)
    assert values["f"] == 2.5
    assert values["b"] is False
    assert values["l"] == ["a", " b", "c"]  # no trimming of spaces
    assert values["e"] == []
    assert values["j"] == {"k": [1]}
    assert bind(hot(parameters={"b": {"type": "boolean"}}), {"b": "Y"}).params["b"] is True


@pytest.mark.parametrize("schema, value, fragment", [
    ({"type": "number"}, "seven", "not a number"),
    ({"type": "boolean"}, "maybe", "not a boolean"),
    ({"type": "json"}, "{bad", "not valid JSON"),
    ({"type": "number", "constraints": [{"range": {"min": 1, "max": 3}}]}, 4, "at most 3"),
    ({"type": "string", "constraints": [{"length": {"min": 2}}]}, "a", "at least 2"),
    ({"type": "string", "constraints": [{"allowed_values": ["dev", "prod"]}]}, "test", "allowed values"),
    ({"type": "comma_delimited_list", "constraints": [{"allowed_values": ["a", "b"]}]}, "a,c", "'c'"),
    ({"type": "string", "constraints": [{"allowed_pattern": "[a-z]+"}]}, "abc1", "does not match"),
    ({"type": "number", "constraints": [{"modulo": {"step": 2, "offset": 1}}]}, 4, "modulo"),
    ({"type": "number", "constraints": [{"range": {"min": 1}, "description": "Need one or more"}]}, 0,
     "Need one or more"),
])
def test_parameter_value_errors(schema, value, fragment):
    error = error_of(hot(parameters={"p": schema}), {"p": value})
    assert error.path == "parameters.p"
    assert fragment in error.message


def test_allowed_pattern_is_anchored_at_both_ends():
    template = hot(parameters={"p": {"type": "string", "constraints": [{"allowed_pattern": "[a-z]+"}]}})
    assert bind(template, {"p": "abc"}).params["p"] == "abc"
    with pytest.raises(TemplateError):
        bind(template, {"p": "1abc"})


def test_parameter_presence_rules():
    template = hot(parameters={"need": {"type": "string"}, "opt": {"type": "number", "default": 3}})
    assert error_of(template).path == "parameters.need"
    assert "missing" in error_of(template).message
    assert error_of(template, {"need": "x", "nope": 1}).path == "parameters.nope"
    assert bind(template, {"need": "x", "opt": 5}).params["opt"] == 5  # a user value wins over the default


def test_parameter_schema_errors_are_static():
    cases = {
        "parameters.p.default": {"type": "number", "default": 9, "constraints": [{"range": {"max": 5}}]},
        "parameters.p.type": {"type": "integer"},
        "parameters.p.colour": {"type": "string", "colour": "red"},
        "parameters.p.constraints[0].range": {"type": "string", "constraints": [{"range": {"min": 1}}]},
        "parameters.p.constraints[0].allowed_pattern": {"type": "string",
                                                         "constraints": [{"allowed_pattern": "("}]},
    }
    for path, schema in cases.items():
        with pytest.raises(TemplateError) as info:
            Template(hot(parameters={"p": schema}))
        assert info.value.path == path, schema
    with pytest.raises(TemplateError, match="parameters.p.tags"):
        Template({"heat_template_version": "2017-09-01", "parameters": {"p": {"type": "string", "tags": []}}})
    with pytest.raises(TemplateError, match="parameters.p.constraints"):
        Template({"heat_template_version": "2016-10-14",
                  "parameters": {"p": {"type": "number", "constraints": [{"modulo": {"step": 2, "offset": 0}}]}}})


def test_hidden_parameters_are_masked_and_pseudo_parameters_exist():
    bound = bind(hot(parameters={"pw": {"type": "string", "hidden": True}}), {"pw": "secret"},
                 stack_id="sid", stack_name="sname", project_id="proj")
    shown = bound.displayed_parameters()
    assert shown["pw"] == "******"
    assert bound.params["pw"] == "secret"
    assert shown["OS::stack_id"] == "sid" and shown["OS::stack_name"] == "sname"
    assert shown["OS::project_id"] == "proj"


# ----------------------------------------------------------------- resources

def test_property_errors_carry_the_full_path():
    base = {"type": "DockerInc::Docker::Container", "properties": {"image": "busybox"}}
    web = lambda **props: hot({"web": {**base, "properties": {**base["properties"], **props}}})  # noqa: E731
    assert error_of(hot({"web": {"type": "DockerInc::Docker::Container"}})).path == "resources.web.properties.image"
    assert error_of(web(imagee="x")).path == "resources.web.properties.imagee"
    assert error_of(web(cmd=["ls", {"a": 1}])).path == "resources.web.properties.cmd[1]"
    error = error_of(web(restart_policy={"Name": "sometimes"}))
    assert error.path == "resources.web.properties.restart_policy.Name"
    assert error_of(web(memory="lots")).path == "resources.web.properties.memory"


def test_property_coercion_follows_parameter_rules():
    template = hot({"r": {"type": "OS::Heat::RandomString", "properties": {"length": {"get_param": "n"}}}},
                   parameters={"n": {"type": "string", "default": "12"}})
    bind(template)  # "12" is acceptable for an integer property
    with pytest.raises(TemplateError, match="resources.r.properties.length"):
        bind(template, {"n": "twelve"})


def test_references_must_exist_and_attributes_must_be_declared():
    error = error_of(hot({"a": {"type": "OS::Heat::TestResource", "properties": {"value": {"get_resource": "b"}}}}))
    assert error.path == "resources.a.properties.value.get_resource"
    assert '"b" is not defined' in error.message
    error = error_of(hot({
        "a": {"type": "OS::Heat::TestResource"},
        "b": {"type": "OS::Heat::TestResource", "properties": {"value": {"get_attr": ["a", "nope"]}}},
    }))
    assert error.path == "resources.b.properties.value.get_attr"
    assert "invalid attribute" in error.message
    # OS::Heat::None declares no attributes at all.
    error = error_of(hot({
        "a": {"type": "OS::Heat::None"},
        "b": {"type": "OS::Heat::TestResource", "properties": {"value": {"get_attr": ["a", "x"]}}},
    }))
    assert "invalid attribute" in error.message


def test_none_accepts_anything_but_its_references_still_order():
    bound = bind(hot({
        "a": {"type": "OS::Heat::TestResource"},
        "n": {"type": "OS::Heat::None", "properties": {"junk": {"list_join": [1, 2]}, "x": {"get_attr": ["a", "output"]}}},
    }))
    assert bound.resources["n"].requires == {"a"}


def test_dependencies_from_depends_on_and_nested_references():
    bound = bind({
        "heat_template_version": "2018-08-31",
        "parameters": {"n": {"type": "number", "default": 2, "constraints": [{"range": {"min": 1}}]}},
        "resources": {
            "net": {"type": "OS::Heat::None"},
            "key": {"type": "OS::Heat::RandomString", "properties": {"length": 8}},
            "srv": {"type": "OS::Heat::TestResource", "depends_on": "net", "properties": {
                "value": {"str_replace": {"template": "k=$K", "params": {"$K": {"get_resource": "key"}}}}}},
            "tail": {"type": "OS::Heat::None", "properties": {"x": {"get_attr": ["srv", "output"]}}},
        },
    })
    requires = {name: set(d.requires) for name, d in bound.resources.items()}
    assert requires == {"net": set(), "key": set(), "srv": {"net", "key"}, "tail": {"srv"}}


def test_cycle_is_refused_naming_only_its_members():
    error = error_of(hot({
        "a": {"type": "OS::Heat::TestResource", "depends_on": "b"},
        "b": {"type": "OS::Heat::TestResource", "properties": {"value": {"get_attr": ["a", "output"]}}},
        "c": {"type": "OS::Heat::None", "depends_on": "a"},
    }))
    assert error.path == "resources"
    assert "circular" in error.message and "a, b" in error.message
    assert "c" not in error.message.split(":")[-1]


def test_self_reference_is_a_cycle():
    error = error_of(hot({"a": {"type": "OS::Heat::TestResource", "properties": {
        "value": {"get_resource": "a"}}}}))
    assert "circular" in error.message and "a" in error.message


# ---------------------------------------------------------------- conditions

E2 = {
    "heat_template_version": "2018-08-31",
    "parameters": {"env": {"type": "string", "default": "dev", "constraints": [{"allowed_values": ["dev", "prod"]}]}},
    "conditions": {"is_prod": {"equals": [{"get_param": "env"}, "prod"]}},
    "resources": {
        "db": {"type": "OS::Heat::None", "condition": "is_prod"},
        "app": {"type": "OS::Heat::TestResource", "depends_on": "db",
                "properties": {"value": {"if": ["is_prod", {"get_resource": "db"}, "no-db"]}}},
    },
    "outputs": {"db_id": {"value": {"get_resource": "db"}, "condition": "is_prod"}},
}


def test_conditions_disable_resources_and_drop_their_edges():
    dev = bind(E2)
    assert set(dev.resources) == {"app"}
    assert dev.resources["app"].requires == frozenset()
    assert outputs(E2)["db_id"]["output_value"] is None
    assert "output_error" not in outputs(E2)["db_id"]
    prod = bind(E2, {"env": "prod"})
    assert prod.resources["app"].requires == {"db"}


def test_unguarded_reference_to_a_disabled_resource_is_an_error():
    template = {**E2, "resources": {**E2["resources"], "app": {
        "type": "OS::Heat::TestResource", "properties": {"value": {"get_resource": "db"}}}}}
    error = error_of(template)
    assert error.path == "resources.app.properties.value.get_resource"
    assert "disabled" in error.message


@pytest.mark.parametrize("conditions, path, fragment", [
    ({"a": {"not": "b"}, "b": {"not": "a"}}, "conditions.", "circular"),
    ({"a": {"not": "ghost"}}, "conditions.a.not", "not defined"),
    ({"a": "b", "b": True}, "conditions.a", "boolean or a condition function"),
    ({"a": {"equals": [{"get_resource": "r"}, "x"]}}, "conditions.a.equals[0].get_resource", "not allowed"),
    ({"a": {"and": [True]}}, "conditions.a.and", "at least 2"),
    ({"a": {"contains": ["x", "xyz"]}}, "conditions.a.contains[1]", "must be a list"),
])
def test_condition_errors(conditions, path, fragment):
    error = error_of(hot({"r": {"type": "OS::Heat::None"}}, conditions=conditions))
    assert error.path.startswith(path)
    assert fragment in error.message


def test_unknown_condition_of_an_output_is_a_validation_error():
    error = error_of(hot(outputs={"o": {"value": 1, "condition": "ghost"}}))
    assert error.path == "outputs.o.condition" and "not defined" in error.message


def test_condition_functions():
    template = hot(
        parameters={"zone": {"type": "string", "default": "b"}},
        conditions={
            "in_list": {"contains": [{"get_param": "zone"}, ["a", "b"]]},
            "both": {"and": ["in_list", {"not": False}]},
            "either": {"or": [False, {"equals": [1, 2]}]},
        },
        resources={"yes": {"type": "OS::Heat::None", "condition": "both"},
                   "no": {"type": "OS::Heat::None", "condition": "either"},
                   "inline": {"type": "OS::Heat::None", "condition": {"not": "either"}}})
    assert set(bind(template).resources) == {"yes", "inline"}


# ----------------------------------------------------------------- functions

def value_of(expr, version="2021-04-16", params=None, view=None):
    template = {"heat_template_version": version, "parameters": params or {}, "outputs": {"o": {"value": expr}}}
    out = outputs(template, view=view)["o"]
    if "output_error" in out:
        raise TemplateError("outputs.o", out["output_error"])
    return out["output_value"]


def test_str_replace_longest_key_first_without_rescanning():
    expr = {"str_replace": {"template": "$a $ab", "params": {"$a": "$ab", "$ab": "X"}}}
    assert value_of(expr) == "$ab X"
    expr = {"str_replace": {"template": "v=$v", "params": {"$v": {"k": [1, True]}}}}
    assert value_of(expr) == 'v={"k": [1, true]}'
    assert value_of({"str_replace": {"template": "n=N b=B z=Z", "params": {"N": 3, "B": False, "Z": None}}}) == \
        "n=3 b=False z="
    with pytest.raises(TemplateError, match="cannot be inserted"):
        value_of({"str_replace": {"template": "$v", "params": {"$v": [1]}}}, version="2015-04-30")


def test_str_replace_strict_variants():
    with pytest.raises(TemplateError, match="does not occur"):
        value_of({"str_replace_strict": {"template": "abc", "params": {"x": "y"}}})
    assert value_of({"str_replace_strict": {"template": "abc", "params": {"b": ""}}}) == "ac"
    with pytest.raises(TemplateError, match="empty"):
        value_of({"str_replace_vstrict": {"template": "abc", "params": {"b": ""}}})
    # Not a function before its version: plain data.
    assert value_of({"str_replace_strict": {"template": "a", "params": {}}}, version="2016-10-14") == \
        {"str_replace_strict": {"template": "a", "params": {}}}


def test_list_join():
    assert value_of({"list_join": [",", ["a", None], None, [{"k": 1}]]}) == 'a,,{"k": 1}'
    with pytest.raises(TemplateError, match=r"outputs.o.value.list_join\[1\]\[0\]"):
        value_of({"list_join": [",", [1]]})
    with pytest.raises(TemplateError, match="must be a list"):
        value_of({"list_join": [",", "abc"]})
    with pytest.raises(TemplateError, match="arguments"):
        value_of({"list_join": [",", ["a"], ["b"]]}, version="2015-04-30")


def test_get_param_paths():
    params = {"j": {"type": "json", "default": {"a": [{"b": "deep"}]}}}
    assert value_of({"get_param": ["j", "a", "0", "b"]}, params=params) == "deep"
    assert value_of({"get_param": ["j", "a", "7"]}, params=params) == ""
    assert value_of({"get_param": ["j", "missing", "x"]}, params=params) == ""
    with pytest.raises(TemplateError, match="not declared"):
        value_of({"get_param": "ghost"})


def test_if_without_false_branch_removes_the_item():
    expr = {"keep": 1, "drop": {"if": [False, "x"]}, "list": ["a", {"if": [False, "b"]}]}
    assert value_of(expr) == {"keep": 1, "list": ["a"]}
    with pytest.raises(TemplateError, match="arguments"):
        value_of({"if": [False, "x"]}, version="2018-08-31")


def test_get_attr_against_live_data_and_outputs_errors():
    template = hot({"srv": {"type": "OS::Heat::TestResource"}}, outputs={
        "whole": {"value": {"get_attr": ["srv"]}},
        "path": {"value": {"get_attr": ["srv", "output", "k"]}},
        "ref": {"value": {"get_resource": "srv"}},
        "bad": {"value": {"get_attr": ["srv", "nope"]}},
        "join": {"value": {"list_join": [",", "not a list"]}},
    })
    view = view_of(srv=("OS::Heat::TestResource", "phys-1", {"output": {"k": "v"}}))
    out = outputs(template, view=view)
    assert out["whole"]["output_value"] == {"output": {"k": "v"}}
    assert out["path"]["output_value"] == "v"
    assert out["ref"]["output_value"] == "phys-1"
    assert out["bad"]["output_value"] is None and "invalid attribute" in out["bad"]["output_error"]
    assert "must be a list" in out["join"]["output_error"]
    # Before anything exists: attributes are null, references are the resource name.
    empty = outputs(template)
    assert empty["path"]["output_value"] is None and "output_error" not in empty["path"]
    assert empty["ref"]["output_value"] == "srv"
