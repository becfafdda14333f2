"""python-openstackclient plugin: `openstack coe task list | show | wait`.

OSC loads it through the `openstack.cli.extension` entry point; its commands are in the
`openstack.jeroboam.v1` group (their names start with `coe_task_`, beside Magnum's own
`coe` commands). Requests go through OSC's authenticated session to the container-infra
endpoint, from the catalog or from --os-endpoint with --os-auth-type none.
"""

from __future__ import annotations

from osc_lib import utils

from jeroboam.cli.tasks import HEADERS, Tasks

API_NAME = "jeroboam"
API_VERSION_OPTION = "os_jeroboam_api_version"
DEFAULT_API_VERSION = "1"
API_VERSIONS = {"1": "jeroboam.cli.tasks.Tasks"}
SERVICE_TYPE = "container-infra"


def make_client(instance):
    endpoint_filter = {"service_type": SERVICE_TYPE, "interface": instance.interface,
                       "region_name": instance.region_name}

    def request(path, params):
        return instance.session.get(path, params=params, headers=HEADERS, endpoint_filter=endpoint_filter,
                                    raise_exc=False)
    return Tasks(request)


def build_option_parser(parser):
    parser.add_argument("--os-jeroboam-api-version", metavar="<version>",
                        default=utils.env("OS_JEROBOAM_API_VERSION", default=DEFAULT_API_VERSION),
                        help=f"Jeroboam tasks API version, default={DEFAULT_API_VERSION} (Env: OS_JEROBOAM_API_VERSION)")
    return parser
