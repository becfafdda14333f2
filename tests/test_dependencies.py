"""Every package the code imports is declared in pyproject.toml, in the group that installs it,
with an upper bound: a new major release of a dependency cannot break a fresh install unseen."""

import ast
import importlib.metadata
import re
import sys
import tomllib

from packaging.requirements import Requirement

from tests.support import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LOCAL = {"jeroboam", "tests", "bench", "jeroboam_test_driver"}
# Which code each group installs for: the service, the OSC plugin, the tests and benchmarks.
GROUPS = [("dependencies", ["jeroboam"]), ("osc", ["jeroboam/osc"]), ("test", ["tests", "bench"])]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(group: str) -> list[Requirement]:
    raw = PYPROJECT["dependencies"] if group == "dependencies" else PYPROJECT["optional-dependencies"][group]
    return [Requirement(r) for r in raw if not r.startswith("jeroboam")]


def _imported(folder: str) -> set[str]:
    names = set()
    others = [ROOT / f for _, folders in GROUPS for f in folders if f != folder and f.startswith(folder + "/")]
    for path in (ROOT / folder).rglob("*.py"):
        if any(path.is_relative_to(other) for other in others):
            continue  # a folder of its own group, checked there
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return names - LOCAL - set(sys.stdlib_module_names)


def test_every_import_is_declared_where_it_is_needed():
    distributions = importlib.metadata.packages_distributions()
    declared: set[str] = set()
    missing = []
    for group, folders in GROUPS:
        declared |= {_normal(r.name) for r in _requirements(group)}  # each group installs the ones before it
        for folder in folders:
            for module in sorted(_imported(folder)):
                dists = {_normal(d) for d in distributions.get(module, [module])}
                if not dists & declared:
                    missing.append(f"{folder} imports {module} ({', '.join(sorted(dists))}): not in {group}")
    assert missing == []


def test_every_requirement_has_an_upper_bound():
    unbounded = [str(r) for group, _ in GROUPS for r in _requirements(group)
                 if not any(s.operator in ("<", "<=", "==", "~=") for s in r.specifier)]
    assert unbounded == []


def test_the_test_group_installs_the_plugin_group():
    assert "jeroboam[osc]" in PYPROJECT["optional-dependencies"]["test"]
