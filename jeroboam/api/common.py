"""What every resource module shares: finding an object by uuid or name, paging a list."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import sqlalchemy as sa

from jeroboam.api.errors import BadRequest, Conflict, NotFound

# Integer columns are 32-bit.
INT_MAX = 2**31 - 1
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


def is_uuid(value: str) -> bool:
    return bool(UUID_RE.match(value))


def int_id(value: str) -> int | None:
    """An integer id as a client wrote it; None when it cannot name a row (ids are 32-bit
    integers; str.isdigit also accepts digits such as "²" that int() refuses)."""
    if not (value.isascii() and value.isdigit()):
        return None
    number = int(value)
    return number if number <= INT_MAX else None


# An absolute or home-relative file path, or a unix-socket URL; not a URL's `//`, not the
# `/24` of a network, not a relative `a/b` nor one below a placeholder (`<state_path>/images`).
HOST_PATH_RE = re.compile(r"[a-z+.-]*unix://\S+|(?<![\w.~/>-])~?/(?!/|\d+(?![\w/.-]))[^\s'\"(),;\[\]{}<>]+")


def for_tenant(ctx, value):
    """A status reason or error (a string, or a dict or list of them) as a tenant sees it: host
    paths (the data dir, sockets, programs) become `<path>`; admins, the operator, see all."""
    if ctx.is_admin:
        return value
    if isinstance(value, str):
        return HOST_PATH_RE.sub("<path>", value)
    if isinstance(value, dict):
        return {k: for_tenant(ctx, v) for k, v in value.items()}
    if isinstance(value, list):
        return [for_tenant(ctx, v) for v in value]
    return value


def iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def find_one(session, model, ident: str, scope, kind: str, plural: str):
    """An object by uuid, else by unique name, among those `scope` (a where clause) lets the caller see."""
    column = model.uuid if is_uuid(ident) else model.name
    rows = session.scalars(sa.select(model).where(column == ident, scope).limit(2)).all()
    if not rows:
        raise NotFound(f"{kind} {ident} could not be found.")
    if len(rows) > 1:
        raise Conflict(f"Multiple {plural} exist with same name. Please use the {kind.lower()} uuid instead.")
    return rows[0]


def filter_equal(stmt, query: dict, columns: dict):
    """Narrow `stmt` to rows whose column equals each query value given; returns the
    statement and the filters used (a `next` link must repeat them)."""
    filters = {name: query[name] for name in columns if name in query}
    for name, value in filters.items():
        stmt = stmt.where(columns[name] == value)
    return stmt, filters


def page_limit(call) -> int:
    """The page size a list request asks for, within [api] max_limit (also the default)."""
    max_limit = call.state.settings.get("api", "max_limit")
    limit = int(call.query["limit"]) if "limit" in call.query else max_limit
    if limit <= 0:
        raise BadRequest("Limit must be positive")
    return min(limit, max_limit)


def page(call, model, stmt, path: str, marker_column: str = "uuid", extra_query: dict | None = None):
    """Apply limit/marker/sort_key/sort_dir to `stmt`; returns (rows, next_url or None).

    Keyset pagination on (sort_key, id), nulls last ascending, so that the marker
    works the same on SQLite and PostgreSQL.
    """
    q = call.query
    limit = page_limit(call)
    sort_dir = q.get("sort_dir", "asc")
    if sort_dir not in ("asc", "desc"):
        raise BadRequest(f"Invalid sort direction: {sort_dir}. Acceptable values are 'asc' or 'desc'")
    sort_key = q.get("sort_key", "id")
    column = model.__table__.columns.get(sort_key)
    if column is None:
        raise BadRequest(f'The sort_key value "{sort_key}" is an invalid field for sorting')
    column = getattr(model, sort_key)
    ident = model.id
    if "marker" in q:
        marker_value = int_id(q["marker"]) if marker_column == "id" else q["marker"]
        # Looked up among the rows the list itself may return: a marker from elsewhere (another
        # project's object) is unknown, not a way to learn that it exists or where it sorts.
        found = sa.select(column, ident).where(getattr(model, marker_column) == marker_value)
        if stmt.whereclause is not None:
            found = found.where(stmt.whereclause)
        marker = None if marker_value is None else call.session.execute(found).first()
        if marker is None:
            raise NotFound(f"Marker {q['marker']} could not be found.")
        stmt = stmt.where(_after(column, ident, marker[0], marker[1], sort_dir))
    if sort_dir == "asc":
        stmt = stmt.order_by(column.is_(None), column, ident)
    else:
        stmt = stmt.order_by(column.is_not(None), column.desc(), ident.desc())
    result = call.session.execute(stmt.limit(limit))
    # ORM objects for `select(Model)`; plain rows (a third of the cost) for `select(*columns)`.
    whole_objects = len(stmt.column_descriptions) == 1 and stmt.column_descriptions[0]["expr"] is model
    rows = result.scalars().all() if whole_objects else result.all()
    next_url = None
    if len(rows) == limit:
        params = {**(extra_query or {}), "sort_key": sort_key, "sort_dir": sort_dir, "limit": limit,
                  "marker": getattr(rows[-1], marker_column)}
        next_url = f"{call.base_url}/v1/{path}?{urlencode(params)}"
    return rows, next_url


def _after(column, ident, value, marker_id, sort_dir):
    if sort_dir == "asc":
        if value is None:
            return sa.and_(column.is_(None), ident > marker_id)
        return sa.or_(column > value, sa.and_(column == value, ident > marker_id), column.is_(None))
    if value is None:
        return sa.or_(sa.and_(column.is_(None), ident < marker_id), column.is_not(None))
    return sa.or_(column < value, sa.and_(column == value, ident < marker_id))


def listing(key: str, items: list, next_url: str | None) -> dict:
    body = {key: items}
    if next_url:
        body["next"] = next_url
    return body
