"""The layers, as imports: what each part of the code may import. Fails when a module reaches where
it must not (README, "Layout").

    quaero (the shared kernel, the client, the CLI)  imports neither service
    manager_service / executor_service              import quaero, never each other
    console_service (the operator console)          a client: quaero only, never a service's internals
    manager_service.storage                          no gRPC, no generated code, no RPC plumbing
    executor_service.crawl                           no gRPC, no generated code
    quaero's rules (errors, cookies, crawl spec...)  no gRPC, no generated code: storage and crawl use them
    quaero.testing, quaero.demo                      the top: may start both services
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("quaero", "manager_service", "executor_service", "console_service")
SERVICES = ("manager_service", "executor_service", "console_service")
TOP = ("quaero.testing", "quaero.demo")
RULES = ("quaero.errors", "quaero.job_status", "quaero.crawl_spec", "quaero.cookies", "quaero.limits",
         "quaero.network_policy", "quaero.patterns", "quaero.urls")
RPC = ("grpc", "grpc_status", "grpc_health", "grpc_reflection", "quaero.api", "quaero.rpc", "quaero.client")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "api" in path.relative_to(ROOT).parts[:2] and package == "quaero":
                continue  # generated
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def imports_of(name: str, path: Path) -> set[str]:
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def forbidden(name: str) -> tuple[str, ...]:
    if within(name, TOP):
        return ()
    if within(name, RULES):
        return (*SERVICES, *RPC)
    if within(name, ("quaero",)):
        return SERVICES
    if within(name, ("manager_service.storage",)):
        return ("executor_service", "console_service", *RPC)
    if within(name, ("manager_service",)):
        return ("executor_service", "console_service")
    if within(name, ("executor_service.crawl",)):
        return ("manager_service", "console_service", "grpc", "quaero.api", "quaero.rpc", "quaero.client")
    if within(name, ("executor_service",)):
        return ("manager_service", "console_service")
    if within(name, ("console_service",)):
        return ("manager_service", "executor_service")
    return ()


ALL = modules()


@pytest.mark.parametrize("name", sorted(ALL))
def test_a_module_imports_only_what_its_layer_may(name: str) -> None:
    reached = sorted(module for module in imports_of(name, ALL[name]) if within(module, forbidden(name)))
    assert not reached, f"{name} imports {', '.join(reached)}"


def test_the_rules_see_every_layer() -> None:
    names = set(ALL)
    assert {"manager_service.storage.leases", "executor_service.crawl.fetcher", "quaero.crawl_spec",
            "quaero.cli", "quaero.testing.harness", "console_service.feeds"} <= names
