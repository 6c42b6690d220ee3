"""Who may call what: each bearer token stands for a role, and a service's access policy says which
methods need which roles (a method it does not list is open to every role that has a token)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    OPERATOR = "operator"
    EXECUTOR = "executor"


TOKEN_SOURCES = {Role.OPERATOR: "QUAERO_API_TOKEN or the api-token file",
                 Role.EXECUTOR: "QUAERO_EXECUTOR_TOKEN or the executor-token file"}


@dataclass(frozen=True)
class AccessPolicy:
    """only[full method name] = the roles that may call it."""
    only: Mapping[str, frozenset[Role]] = field(default_factory=dict)

    def allows(self, method: str, role: Role) -> bool:
        roles = self.only.get(method)
        return roles is None or role in roles
