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


# Pairs of federated's parts that still import each other, each for a reason named here; the
# test fails on any other pair, and on one of these once it is gone (so the list stays true).
# config <-> model: the run config's checks read the model presets' tasks and the verbalizer's
#   label words, and the model layer is built from the run config.
# config <-> privacy: the checks ask the accountant whether a budget can be met, and the
#   privacy mechanisms read their settings from the run config.
TANGLED = {("config", "model"), ("config", "privacy")}


def _part(path: str) -> str:
    """``federated.<part>`` for a module of federated: its subpackage, or the module itself."""
    return path.split(".")[1]


def test_federateds_parts_import_one_way_but_the_named_pairs() -> None:
    imports: dict[str, set[str]] = {}
    for path in sorted((ROOT / "federated").rglob("*.py")):
        relative = path.relative_to(ROOT).with_suffix("")
        source = _part(".".join(relative.parts))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("federated."):
                target = _part(node.module)
                if target != source:
                    imports.setdefault(source, set()).add(target)
    pairs = {
        tuple(sorted((a, b)))
        for a, targets in imports.items()
        for b in targets
        if a in imports.get(b, set())
    }
    assert pairs == TANGLED
