"""Authorization rules: Magnum's defaults and Jeroboam's own, documented in code (oslo.policy)
and overridable from a policy file that is re-read when it changes.

`oslopolicy-sample-generator --namespace jeroboam` prints every rule below with its
description and the requests it guards (entry points in pyproject.toml).

Decisions are memoised per (rule, target, caller): oslo.policy evaluates a rule
in about 80 microseconds, a noticeable share of a 0.5 ms request. The memo is
dropped when the policy file's rules change, looked at no more than once a second.
"""

from __future__ import annotations

import functools
import logging
import threading
import time

from oslo_config import cfg
from oslo_policy import policy

from jeroboam.api.errors import Forbidden
from jeroboam.orchestration import resources as registry

LOG = logging.getLogger("jeroboam.policy")

ADMIN = "role:admin"
READER = f"{ADMIN} or (role:reader and project_id:%(project_id)s)"
MEMBER = f"{ADMIN} or (role:member and project_id:%(project_id)s)"
MEMBER_USER = f"{ADMIN} or (role:member and project_id:%(project_id)s and user_id:%(user_id)s)"
READER_USER = f"{ADMIN} or (role:reader and project_id:%(project_id)s and user_id:%(user_id)s)"

# Roles are project-scoped in Jeroboam (admin too): Keystone's system scope is not used.
SCOPE = ["project"]
# How often, at most, a request looks whether the policy file changed.
RELOAD_INTERVAL = 1.0


def _rule(name: str, check: str, description: str, *operations: str) -> policy.DocumentedRuleDefault:
    """A documented rule; each operation is "METHOD /path"."""
    ops = [dict(zip(("method", "path"), op.split(" ", 1))) for op in operations]
    return policy.DocumentedRuleDefault(name=name, check_str=check, description=description,
                                        operations=ops, scope_types=SCOPE)


CLUSTER = "/v1/clusters/{cluster_ident}"
TEMPLATE = "/v1/clustertemplates/{clustertemplate_ident}"
NODEGROUP = "/v1/clusters/{cluster_ident}/nodegroups"
FEDERATION = "/v1/federations/{federation_ident}"
STACK = "/v1/stacks/{stack_ident}"
ALL_PROJECTS = ("Magnum's rule for acting on other projects' objects; in Jeroboam the admin role "
                "itself decides what other projects' objects a caller sees, so this rule is "
                "accepted in policy files and not consulted.")

RULES: list[policy.RuleDefault] = [
    policy.RuleDefault("context_is_admin", ADMIN,
                      description="An administrator, for rules that name it (rule:context_is_admin). "
                                  "Which other projects' objects a caller sees follows the admin role."),
    # -- clusters
    _rule("cluster:create", MEMBER, "Create a cluster.", "POST /v1/clusters"),
    _rule("cluster:delete", MEMBER, "Delete a cluster.", f"DELETE {CLUSTER}"),
    _rule("cluster:update", MEMBER, "Change a cluster (node count, health through JSON Patch).",
          f"PATCH {CLUSTER}"),
    _rule("cluster:update_health_status", MEMBER_USER,
          "Set a cluster's health_status and health_status_reason: its owner only.", f"PATCH {CLUSTER}"),
    _rule("cluster:resize", MEMBER, "Resize a nodegroup of a cluster.", f"POST {CLUSTER}/actions/resize"),
    _rule("cluster:upgrade", MEMBER, "Move a cluster to another cluster template.",
          f"POST {CLUSTER}/actions/upgrade"),
    _rule("cluster:get", READER, "Show one cluster.", f"GET {CLUSTER}"),
    _rule("cluster:get_all", READER, "List clusters.", "GET /v1/clusters"),
    _rule("cluster:detail", READER, "List clusters with all their fields.", "GET /v1/clusters/detail"),
    _rule("cluster:get_one_all_projects", ADMIN, ALL_PROJECTS, f"GET {CLUSTER}"),
    _rule("cluster:get_all_all_projects", ADMIN, ALL_PROJECTS, "GET /v1/clusters"),
    _rule("cluster:detail_all_projects", ADMIN, ALL_PROJECTS, "GET /v1/clusters/detail"),
    _rule("cluster:update_all_projects", ADMIN, ALL_PROJECTS, f"PATCH {CLUSTER}"),
    _rule("cluster:delete_all_projects", ADMIN, ALL_PROJECTS, f"DELETE {CLUSTER}"),
    _rule("cluster:upgrade_all_projects", ADMIN, ALL_PROJECTS, f"POST {CLUSTER}/actions/upgrade"),
    # -- cluster templates
    _rule("clustertemplate:create", MEMBER, "Create a cluster template.", "POST /v1/clustertemplates"),
    _rule("clustertemplate:get", READER, "Show one cluster template.", f"GET {TEMPLATE}"),
    _rule("clustertemplate:get_all", READER, "List cluster templates.", "GET /v1/clustertemplates"),
    _rule("clustertemplate:detail", READER, "List cluster templates with all their fields.",
          "GET /v1/clustertemplates/detail"),
    _rule("clustertemplate:update", MEMBER, "Change a cluster template.", f"PATCH {TEMPLATE}"),
    _rule("clustertemplate:delete", MEMBER, "Delete a cluster template no cluster uses.", f"DELETE {TEMPLATE}"),
    _rule("clustertemplate:publish", ADMIN, "Make a cluster template public or hidden.",
          "POST /v1/clustertemplates", f"PATCH {TEMPLATE}"),
    _rule("clustertemplate:update_all_projects", ADMIN, "Change another project's cluster template.",
          f"PATCH {TEMPLATE}"),
    _rule("clustertemplate:delete_all_projects", ADMIN, "Delete another project's cluster template.",
          f"DELETE {TEMPLATE}"),
    _rule("clustertemplate:get_all_projects", ADMIN, ALL_PROJECTS, f"GET {TEMPLATE}"),
    _rule("clustertemplate:get_all_all_projects", ADMIN, ALL_PROJECTS, "GET /v1/clustertemplates"),
    _rule("clustertemplate:detail_all_projects", ADMIN, ALL_PROJECTS, "GET /v1/clustertemplates/detail"),
    # -- nodegroups
    _rule("nodegroup:get", READER, "Show one nodegroup of a cluster.", f"GET {NODEGROUP}/{{nodegroup_ident}}"),
    _rule("nodegroup:get_all", READER, "List a cluster's nodegroups.", f"GET {NODEGROUP}"),
    _rule("nodegroup:create", MEMBER, "Add a nodegroup to a cluster.", f"POST {NODEGROUP}"),
    _rule("nodegroup:update", MEMBER, "Change a nodegroup's sizes, labels or taints.",
          f"PATCH {NODEGROUP}/{{nodegroup_ident}}"),
    _rule("nodegroup:delete", MEMBER, "Delete a nodegroup.", f"DELETE {NODEGROUP}/{{nodegroup_ident}}"),
    _rule("nodegroup:get_all_all_projects", ADMIN, ALL_PROJECTS, f"GET {NODEGROUP}"),
    _rule("nodegroup:get_one_all_projects", ADMIN, ALL_PROJECTS, f"GET {NODEGROUP}/{{nodegroup_ident}}"),
    # -- certificates and credentials
    _rule("certificate:get", READER_USER, "Show a cluster's CA certificate: its owner only.",
          "GET /v1/certificates/{cluster_ident}"),
    _rule("certificate:create", MEMBER_USER, "Have a client CSR signed by a cluster's CA: its owner only.",
          "POST /v1/certificates"),
    _rule("certificate:rotate_ca", MEMBER, "Replace a cluster's CA.", "PATCH /v1/certificates/{cluster_ident}"),
    _rule("credential:rotate", "role:member and project_id:%(project_id)s",
          "Rotate a cluster's cloud credential (members of its project, administrators included only "
          "as members).", "PATCH /v1/credentials/{cluster_ident}"),
    # -- quotas and statistics
    _rule("quota:get", READER, "Show a project's quota.", "GET /v1/quotas/{project_id}/{resource}"),
    _rule("quota:get_all", ADMIN, "List quotas.", "GET /v1/quotas"),
    _rule("quota:create", ADMIN, "Set a project's quota.", "POST /v1/quotas"),
    _rule("quota:update", ADMIN, "Change a project's quota.", "PATCH /v1/quotas/{project_id}/{resource}"),
    _rule("quota:delete", ADMIN, "Remove a project's quota (back to the default).",
          "DELETE /v1/quotas/{project_id}/{resource}"),
    _rule("stats:get_all", READER, "Count a project's clusters and nodes (all projects: administrators).",
          "GET /v1/stats"),
    _rule("magnum-service:get_all", ADMIN, "List the workers and whether each is up.", "GET /v1/mservices"),
    # -- federations
    _rule("federation:create", MEMBER, "Create a federation.", "POST /v1/federations"),
    _rule("federation:update", MEMBER, "Change a federation's members or properties.", f"PATCH {FEDERATION}"),
    _rule("federation:delete", MEMBER, "Delete a federation.", f"DELETE {FEDERATION}"),
    _rule("federation:get", READER, "Show one federation.", f"GET {FEDERATION}"),
    _rule("federation:get_all", READER, "List federations.", "GET /v1/federations"),
    _rule("federation:detail", READER, "List federations with all their fields.", "GET /v1/federations/detail"),
    # -- beyond Magnum: tasks
    _rule("task:get", READER, "Show a task with its steps and events.", "GET /v1/tasks/{task_id}"),
    _rule("task:get_all", READER, "List tasks.", "GET /v1/tasks"),
    _rule("task:cancel", MEMBER, "Cancel a task whose action can be cancelled.", "POST /v1/tasks/{task_id}/cancel"),
    _rule("task:get_all_all_projects", ADMIN, ALL_PROJECTS, "GET /v1/tasks"),
    # -- beyond Magnum: stacks
    _rule("stack:get", READER, "Show a stack, its resources, events, outputs and template.",
          f"GET {STACK}", f"GET {STACK}/resources", f"GET {STACK}/resources/{{resource_name}}",
          f"GET {STACK}/events", f"GET {STACK}/outputs", f"GET {STACK}/template"),
    _rule("stack:get_all", READER, "List stacks.", "GET /v1/stacks"),
    _rule("stack:create", MEMBER, "Create a stack (each resource type also needs its resource_types rule).",
          "POST /v1/stacks"),
    _rule("stack:update", MEMBER, "Update or replace a stack's template and parameters.",
          f"PATCH {STACK}", f"PUT {STACK}"),
    _rule("stack:delete", MEMBER, "Delete a stack.", f"DELETE {STACK}"),
    _rule("stack:get_all_all_projects", ADMIN, ALL_PROJECTS, "GET /v1/stacks"),
    # A cluster driver's stack changes through the cluster: tenants only read it.
    _rule("stack:update_cluster_stack", ADMIN, "Update a stack that belongs to a cluster, bypassing its driver.",
          f"PATCH {STACK}", f"PUT {STACK}"),
    _rule("stack:delete_cluster_stack", ADMIN, "Delete a stack that belongs to a cluster, bypassing its driver.",
          f"DELETE {STACK}"),
    _rule("stack:list_resource_types", READER, "List the resource types the caller may use in a stack.",
          "GET /v1/stacks/resource_types"),
]


def resource_type_rules() -> list[policy.RuleDefault]:
    """`resource_types:<TYPE>`, as Heat names them: types safe for tenants are open to anyone
    who may create stacks; providers' types (and plugins that cannot load) to admins only,
    cluster drivers running their stacks without the API."""
    rules = []
    for name in registry.types():
        open_to_all = (cls := registry.get(name)) is not None and cls.tenant_safe
        rules.append(_rule(f"resource_types:{name}", "@" if open_to_all else ADMIN,
                           f"Use resource type {name} in a stack template "
                           f"({'any resource type safe for tenants' if open_to_all else 'reaches the host: administrators'}).",
                           "POST /v1/stacks", f"PATCH {STACK}", f"PUT {STACK}"))
    return rules


def list_rules() -> list[policy.RuleDefault]:
    """Every rule, for oslo.policy's tools (entry point oslo.policy.policies)."""
    return RULES + resource_type_rules()


def _enforcer(conf: cfg.ConfigOpts | None) -> policy.Enforcer:
    """An enforcer reading its [oslo_policy] options from Jeroboam's configuration; without one,
    from none (the rules in code, and a policy.yaml in oslo.config's standard places)."""
    if conf is None:
        conf = cfg.ConfigOpts()
        conf([], project="jeroboam", default_config_files=[], default_config_dirs=[])
    enforcer = policy.Enforcer(conf)
    enforcer.register_defaults(list_rules())
    return enforcer


def get_enforcer() -> policy.Enforcer:
    """The enforcer oslo.policy's tools load (entry point oslo.policy.enforcer), with Jeroboam's
    configuration: [oslo_policy] policy_file from /etc/jeroboam/jeroboam.conf or the environment."""
    from jeroboam import config

    return _enforcer(config.load().conf)


# Keystone's default role implications (keystone-manage bootstrap: admin -> member -> reader),
# applied in both auth modes so that a caller holding "member" may also read.
IMPLIED = {"admin": "member", "member": "reader"}


def expand_roles(roles) -> frozenset[str]:
    expanded = set()
    for role in roles:
        while role and role not in expanded:
            expanded.add(role)
            role = IMPLIED.get(role)
    return frozenset(expanded)


class Policy:
    def __init__(self, conf: cfg.ConfigOpts | None = None):
        self._enforcer = _enforcer(conf)
        self._enforcer.load_rules()
        self._cached = functools.lru_cache(maxsize=65536)(self._decide)
        self._rules = self._enforcer.rules  # the rule set the memo's decisions came from
        self._next_look = time.monotonic() + RELOAD_INTERVAL
        self._looking = threading.Lock()
        self._problem = ""

    def _look_for_changes(self) -> None:
        """Re-read the policy file if it changed (oslo.policy compares its mtime) and forget the
        memo when the rules did. A file that does not parse keeps the rules in force."""
        if not self._looking.acquire(blocking=False):
            return  # another request is looking
        try:
            try:
                self._enforcer.load_rules()
                self._problem = ""
            except Exception as exc:  # a YAML error, a file removed: say so once, keep serving
                if str(exc) != self._problem:
                    LOG.error("policy file not reloaded, the rules in force stay: %s", exc)
                self._problem = str(exc)
            # enforce() may also have reloaded the file on a memo miss: compare with the memo's rules.
            if self._enforcer.rules is not self._rules:
                self._rules = self._enforcer.rules
                self._cached.cache_clear()
                LOG.info("policy file reloaded: %s", self._enforcer.policy_path)
        finally:
            self._next_look = time.monotonic() + RELOAD_INTERVAL
            self._looking.release()

    def _decide(self, rule, target_project, target_user, roles, project, user) -> bool:
        creds = {"roles": list(roles), "project_id": project, "user_id": user}
        target = {"project_id": target_project, "user_id": target_user}
        return self._enforcer.enforce(rule, target, creds)

    def allows(self, rule: str, ctx, target_project: str | None = None, target_user: str | None = None) -> bool:
        if time.monotonic() >= self._next_look:
            self._look_for_changes()
        return self._cached(rule, target_project or ctx.project_id, target_user or ctx.user_id,
                            ctx.roles, ctx.project_id, ctx.user_id)

    def authorize(self, rule: str, ctx, target_project: str | None = None, target_user: str | None = None) -> None:
        if not self.allows(rule, ctx, target_project, target_user):
            raise Forbidden(f"Policy doesn't allow {rule} to be performed.")
