"""/v1/clustertemplates: create, list, show, JSON Patch update, delete; public and hidden."""

from __future__ import annotations

import sqlalchemy as sa

from jeroboam.api import patch, schemas
from jeroboam.api.common import find_one, iso, listing, page
from jeroboam.api.errors import BadRequest, Forbidden
from jeroboam.api.routing import Endpoint, Reply, Resource
from jeroboam.api.validation import Body
from jeroboam.db.models import Cluster, ClusterTemplate
from jeroboam.drivers import COE_DRIVERS, DriverNotFound

FIELDS = [
    "uuid", "name", "coe", "image_id", "flavor_id", "master_flavor_id", "dns_nameserver", "keypair_id",
    "external_network_id", "fixed_network", "fixed_subnet", "network_driver", "apiserver_port",
    "docker_volume_size", "cluster_distro", "http_proxy", "https_proxy", "no_proxy", "volume_driver",
    "registry_enabled", "labels", "tls_disabled", "public", "server_type", "insecure_registry",
    "docker_storage_driver", "master_lb_enabled", "floating_ip_enabled", "project_id", "user_id", "hidden",
    "tags", "driver",
]
NON_REMOVABLE = frozenset({"/coe", "/image_id", "/network_driver", "/external_network_id", "/tls_disabled",
                           "/public", "/server_type", "/registry_enabled", "/cluster_distro", "/hidden"})
# The only changes allowed while clusters use the template.
CHANGEABLE_IN_USE = frozenset({"name", "public", "hidden", "tags"})
PATCH_RESULT = Body("cluster_template", {**schemas.TEMPLATE, "additionalProperties": True}, patched=True)


def view(call, t) -> dict:
    body = {f: getattr(t, f) for f in FIELDS}
    body["links"] = call.link("clustertemplates", t.uuid)
    body["created_at"] = iso(t.created_at)
    body["updated_at"] = iso(t.updated_at)
    return body


def visible(ctx):
    """Own project's templates, public ones, and for admins the public hidden ones too."""
    if ctx.is_admin:
        return sa.true()
    return sa.or_(ClusterTemplate.project_id == ctx.project_id,
                  sa.and_(ClusterTemplate.public.is_(True), ClusterTemplate.hidden.is_(False)))


def lookup(call, ident: str) -> ClusterTemplate:
    return find_one(call.session, ClusterTemplate, ident, visible(call.ctx), "ClusterTemplate", "clustertemplates")


def in_use(session, template: ClusterTemplate) -> bool:
    return session.scalar(sa.select(sa.exists().where(Cluster.cluster_template_id == template.uuid)))


def _authorize_publish(call, values: dict) -> None:
    if values.get("public") or values.get("hidden"):
        if not call.state.policy.allows("clustertemplate:publish", call.ctx):
            raise Forbidden("Not authorized to set public or hidden flag for cluster template.")


def check_provider(call, server_type: str) -> None:
    """server_type local is for the operator: its nodes are root dockerds on the service's own
    host, so whoever holds a cluster's credentials is root there. Admins and the projects the
    operator lists may use it; nobody else may make or use a template of it."""
    if server_type != "local" or call.ctx.is_admin:
        return
    if call.ctx.project_id not in call.state.settings.get("infra", "local_projects"):
        raise Forbidden("server_type local is reserved to the projects listed in [infra] local_projects: "
                        "its nodes run as root on the service's own host.")


def _resolve_driver(call, values: dict) -> str:
    registry = call.state.drivers()
    if values.get("driver"):
        try:
            driver = registry.by_name(values["driver"])
        except DriverNotFound as exc:
            raise BadRequest(str(exc)) from None
        wanted = {"server_type": values["server_type"], "os": values["cluster_distro"], "coe": values["coe"]}
        if wanted not in driver.provides:
            raise BadRequest(f"Cluster driver ({driver.name}) does not support cluster type "
                             f"({wanted['server_type']}, {wanted['os']}, {wanted['coe']}).")
        return driver.name
    try:
        return registry.for_tuple(values["server_type"], values["cluster_distro"], values["coe"]).name
    except DriverNotFound as exc:
        raise BadRequest(str(exc)) from None


def _check_coe_drivers(values: dict) -> None:
    """Magnum's check of network_driver and volume_driver against the COE; fills in the
    COE's default network driver."""
    coe_drivers = COE_DRIVERS.get(values["coe"])
    if coe_drivers is None:
        return
    try:
        values["network_driver"] = coe_drivers.check(values.get("network_driver"), values.get("volume_driver"))
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def _list(call, detail: bool):
    call.state.policy.authorize("clustertemplate:detail" if detail else "clustertemplate:get_all", call.ctx)
    stmt = sa.select(*ClusterTemplate.__table__.c).where(visible(call.ctx))
    rows, next_url = page(call, ClusterTemplate, stmt, "clustertemplates/detail" if detail else "clustertemplates")
    return listing("clustertemplates", [view(call, t) for t in rows], next_url)


def list_templates(call):
    return _list(call, detail=False)


def detail_templates(call):
    return _list(call, detail=True)


def _authorize(call, action: str, template: ClusterTemplate) -> None:
    """Visibility already decided what the caller may see; changing another project's
    template is for admins (`*_all_projects`)."""
    call.state.policy.authorize(f"clustertemplate:{action}", call.ctx)
    if action != "get" and template.project_id != call.ctx.project_id:
        call.state.policy.authorize(f"clustertemplate:{action}_all_projects", call.ctx)


def show(call):
    template = lookup(call, call.path["ident"])
    _authorize(call, "get", template)
    return view(call, template)


def create(call):
    values = dict(call.body)
    call.state.policy.authorize("clustertemplate:create", call.ctx)
    _authorize_publish(call, values)
    _check_coe_drivers(values)
    catalog = call.state.settings.image_catalog
    if values["image_id"] not in catalog:
        raise BadRequest(f"Image {values['image_id']} could not be found.")
    # A cluster_distro sent by the client is accepted and, as in Magnum, replaced by the image's.
    values["cluster_distro"] = catalog[values["image_id"]]
    values.setdefault("server_type", "vm")
    check_provider(call, values["server_type"])
    values["driver"] = _resolve_driver(call, values)
    template = ClusterTemplate(project_id=call.ctx.project_id, user_id=call.ctx.user_id, **values)
    call.session.add(template)
    call.session.flush()
    body = view(call, template)
    return Reply(body, 201, {"Location": body["links"][0]["href"]})


def update(call):
    template = lookup(call, call.path["ident"])
    _authorize(call, "update", template)
    before = {f: getattr(template, f) for f in FIELDS}
    after = patch.apply(before, call.body, non_removable=NON_REMOVABLE)
    after = PATCH_RESULT.check(after)
    changed = patch.changed_fields(before, after)
    if changed - CHANGEABLE_IN_USE and in_use(call.session, template):
        raise BadRequest(f"ClusterTemplate {template.uuid} is referenced by one or multiple clusters.")
    _authorize_publish(call, {k: after.get(k) for k in ("public", "hidden") if k in changed})
    if changed & {"coe", "network_driver", "volume_driver"}:
        _check_coe_drivers(after)
        changed.add("network_driver")
    if "image_id" in changed:
        catalog = call.state.settings.image_catalog
        if after["image_id"] not in catalog:
            raise BadRequest(f"Image {after['image_id']} could not be found.")
        after["cluster_distro"] = catalog[after["image_id"]]
        changed.add("cluster_distro")
    if "server_type" in changed:
        check_provider(call, after["server_type"])
    if changed & {"driver", "coe", "server_type", "image_id"}:
        after["driver"] = _resolve_driver(call, after)
        changed.add("driver")
    for name in changed:
        setattr(template, name, after.get(name))
    call.session.flush()
    return view(call, template)


def delete(call):
    template = lookup(call, call.path["ident"])
    _authorize(call, "delete", template)
    if in_use(call.session, template):
        raise BadRequest(f"ClusterTemplate {template.uuid} is referenced by one or multiple clusters.")
    call.session.delete(template)
    return Reply(None, 204)


TEMPLATE_RESPONSE = {"$ref": "#/components/schemas/ClusterTemplate"}

RESOURCES = [
    Resource("/v1/clustertemplates",
             get=Endpoint(list_templates, "List cluster templates", query=schemas.LIST_QUERY,
                          response={"type": "object", "properties": {"clustertemplates": {
                              "type": "array", "items": TEMPLATE_RESPONSE}, "next": {"type": "string"}}}),
             post=Endpoint(create, "Create a cluster template", 201, body=schemas.TEMPLATE_CREATE,
                           response=TEMPLATE_RESPONSE)),
    Resource("/v1/clustertemplates/detail",
             get=Endpoint(detail_templates, "List cluster templates with details", query=schemas.LIST_QUERY)),
    Resource("/v1/clustertemplates/{ident}",
             get=Endpoint(show, "Show a cluster template by uuid or name", query=schemas.NO_QUERY,
                          response=TEMPLATE_RESPONSE),
             patch=Endpoint(update, "Update a cluster template (JSON Patch)", body=schemas.PATCH,
                            response=TEMPLATE_RESPONSE),
             delete=Endpoint(delete, "Delete a cluster template", 204)),
]
