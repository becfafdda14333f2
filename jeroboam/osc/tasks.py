"""`openstack coe task list | show | wait`: the front end of jeroboam.cli.tasks in OSC."""

from __future__ import annotations

from osc_lib import exceptions
from osc_lib.command import command

from jeroboam.cli import tasks


def _client(cmd) -> tasks.Tasks:
    return cmd.app.client_manager.jeroboam


class _TaskCommand:
    def run_tasks(self, fn, *args):
        try:
            return fn(*args)
        except tasks.TaskError as exc:
            raise exceptions.CommandError(str(exc)) from None


class ListTask(_TaskCommand, command.Lister):
    """List tasks (every asynchronous action of the service)."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("--resource", metavar="<uuid>", help="Only the tasks of this cluster, nodegroup or stack")
        parser.add_argument("--action", metavar="<action>", help="Only this action, e.g. cluster_create")
        parser.add_argument("--state", metavar="<state>", help="Only this state, e.g. RUNNING")
        return parser

    def take_action(self, parsed_args):
        found = self.run_tasks(lambda: _client(self).list(resource_uuid=parsed_args.resource,
                                                          action=parsed_args.action, state=parsed_args.state))
        return tasks.LIST_COLUMNS, [[t[c] for c in tasks.LIST_COLUMNS] for t in found]


class ShowTask(_TaskCommand, command.ShowOne):
    """Show a task with its steps, and the step that failed and why."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        parser.add_argument("task", metavar="<task>", help="UUID of the task")
        return parser

    def take_action(self, parsed_args):
        task = self.run_tasks(_client(self).get, parsed_args.task)
        names = list(tasks.SHOW_FIELDS) + ["steps", "failure"]
        steps = "\n".join(tasks.step_line(s).strip() for s in task.get("steps") or [])
        return names, [task.get(n) for n in tasks.SHOW_FIELDS] + [steps, tasks.failure(task)]


class WaitTask(_TaskCommand, command.Command):
    """Follow a task to its end, step by step with a progress bar; fails when the task does."""

    def get_parser(self, prog_name):
        parser = super().get_parser(prog_name)
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("task", metavar="<task>", nargs="?", help="UUID of the task")
        which.add_argument("--resource", metavar="<uuid>", help="Follow the newest task of this resource instead")
        parser.add_argument("--interval", type=float, default=0.5, help="Seconds between looks (default 0.5)")
        parser.add_argument("--timeout", type=float, help="Give up (exit 2) after this many seconds")
        return parser

    def take_action(self, parsed_args):
        client = _client(self)
        uuid = parsed_args.task or self.run_tasks(client.latest, parsed_args.resource)["uuid"]
        return self.run_tasks(tasks.wait, client, uuid, self.app.stdout, parsed_args.interval, parsed_args.timeout)
