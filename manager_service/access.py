"""Which role may call which manager method (README, "Roles"). The operator token does everything
but read cookie values and hold leases; the executor token does the leases, reads cookie values, and
makes the job calls a crawl needs, but cannot change credentials or definitions or read documents."""
from __future__ import annotations

from quaero.rpc.roles import AccessPolicy, Role

OPERATOR, EXECUTOR = frozenset({Role.OPERATOR}), frozenset({Role.EXECUTOR})
JOBS = "/quaero.manager.v1.JobManager/"
AUTH = "/quaero.manager.v1.AuthStore/"
DEFINITIONS = "/quaero.manager.v1.JobDefinitions/"
DOCUMENTS = "/quaero.manager.v1.Documents/"

MANAGER_ACCESS = AccessPolicy({
    JOBS + "DeleteJob": OPERATOR,
    **{JOBS + name: EXECUTOR for name in ("LeaseJobs", "RenewLease", "CompleteLeasedJob",
                                                "CompleteLeasedJobs", "ReleaseLeases")},
    AUTH + "GetCredentials": EXECUTOR,
    **{AUTH + name: OPERATOR for name in ("PutCredentials", "ListCredentials", "DeleteCredentials")},
    **{DEFINITIONS + name: OPERATOR for name in ("CreateJobDefinition", "UpdateJobDefinition", "DeleteJobDefinition",
                                                 "ListJobDefinitions")},
    **{DOCUMENTS + name: OPERATOR for name in ("GetDocument", "ListDocuments", "SearchDocuments")},
})
