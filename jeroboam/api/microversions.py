"""`OpenStack-API-Version: container-infra X.Y` negotiation (1.1 to 1.14)."""

from __future__ import annotations

import orjson

from jeroboam.api.errors import APIError, NotAcceptable

MIN = (1, 1)
MAX = (1, 14)
SERVICE_NAMES = ("container-infrastructure-management", "container-infrastructure", "container-infra")
# What responses call the service: the name Magnum 23 uses.
SERVICE = "container-infrastructure-management"
HEADER = "openstack-api-version"
HELP = "http://docs.openstack.org/api-guide/compute/microversions.html"


def fmt(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


class Unsupported(APIError):
    """A well-formed version outside 1.1-1.14: the body Magnum's version check sends."""

    status = 406

    def __init__(self, requested: str, headers: dict):
        self.requested = requested
        super().__init__(f"Version {requested} is not supported", headers=headers)

    def body(self) -> bytes:
        major = self.requested.split(".")[0]
        range_ = f"[{SERVICE} {fmt(MIN)}, {SERVICE} {fmt(MAX)}]"
        if major != str(MIN[0]):
            description = (f"Mutually exclusive versions requested. Version {self.requested} requested "
                           f"but not supported by this service.The supported version range is: {range_}.")
        else:
            description = (f"Version {self.requested} was requested but the minor version is not "
                           f"supported by this service. The supported version range is: {range_}.")
        return orjson.dumps({"errors": [{
            "code": "magnum.microversion-unsupported", "title": "Requested microversion is unsupported",
            "description": description, "max_version": fmt(MAX), "min_version": fmt(MIN),
            "links": [{"rel": "help", "href": HELP}]}]})


def response_headers(version: str) -> dict[str, str]:
    return {
        "OpenStack-API-Version": f"{SERVICE} {version}",
        "OpenStack-API-Minimum-Version": f"{SERVICE} {fmt(MIN)}",
        "OpenStack-API-Maximum-Version": f"{SERVICE} {fmt(MAX)}",
        "Vary": "OpenStack-API-Version",
    }


DEFAULT_HEADERS = response_headers(fmt(MIN))


def negotiate(header: str | None) -> tuple[int, int]:
    """The version a request asked for; raises NotAcceptable or Unsupported."""
    if header is None:
        return MIN
    parts = header.split()
    if len(parts) != 2 or parts[0] not in SERVICE_NAMES:
        raise NotAcceptable("Invalid service type for OpenStack-API-Version header")
    value = parts[1]
    if value.lower() == "latest":
        return MAX
    major, dot, minor = value.partition(".")
    if not (dot and value.isascii() and major.isdigit() and minor.isdigit()):  # "²".isdigit() is true
        raise NotAcceptable("Invalid value for OpenStack-API-Version header")
    version = (int(major), int(minor))
    if not MIN <= version <= MAX:
        raise Unsupported(value, response_headers(value))
    return version


def too_old(version: tuple[int, int]) -> NotAcceptable:
    return NotAcceptable(f"Version {fmt(version)} was requested but the requested API patch is not "
                         "supported for this version.")
