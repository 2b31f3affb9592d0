"""Packages import one way: what each top-level package may import, read from every module's
import statements (lazy imports inside functions included), so a cycle cannot creep in."""

from __future__ import annotations

import ast

from tests.simulate import ROOT

PACKAGES = ("federated", "client", "server", "strategies", "simulation")
# What each package may import besides itself. federated is the shared core and imports none of
# the others; the device simulator runs inside the server's rounds and the client's Ray workers,
# so both use it, and it uses neither.
ALLOWED = {
    "federated": set(),
    "strategies": {"federated"},
    "simulation": {"federated"},
    "client": {"federated", "simulation"},
    "server": {"federated", "strategies", "simulation"},
}


def _imported_packages(source: str) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


def test_each_package_imports_only_what_it_may() -> None:
    wrong = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            extra = _imported_packages(path.read_text()) - ALLOWED[package] - {package}
            wrong += [f"{path.relative_to(ROOT)} imports {name}" for name in sorted(extra)]
    assert not wrong, "\n".join(wrong)


def test_no_two_packages_import_each_other() -> None:
    for package, allowed in ALLOWED.items():
        for other in allowed:
            assert package not in ALLOWED[other], f"{package} and {other} import each other"
