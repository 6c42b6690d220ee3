"""1,000 WatchJob streams on one run, from another process, while the run crawls: every stream sees the
final state, and the manager stays small (threads and memory: streams do not hold a thread each). The
slowdown they cost is measured by bench/watch_load.py, not here."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from quaero.api.executor.v1 import executor_pb2, executor_pb2_grpc
from quaero.api.manager.v1 import auth_pb2, definitions_pb2, jobs_pb2
from quaero.client import ManagerClient
from quaero.rpc.channel import open_channel
from quaero.testing.harness import LOCAL_SITES
from quaero.testing.processes import start_executor, start_manager
from quaero.testing.site import Request, Response, Routes, SiteServer, html
from tests.process.test_executor_process import wait_for

WATCHERS = 1000
TOKEN = "watch-token"
SESSION = "watch-session-3"
WATCH = """
import sys, threading
from quaero.api.manager.v1 import jobs_pb2
from quaero.client import ManagerClient
client = ManagerClient.connect(sys.argv[1], sys.argv[2], default_timeout=300)
final = []
def watch():
    last = None
    for job in client.jobs.WatchJob(jobs_pb2.WatchJobRequest(job_id=sys.argv[3]), timeout=300):
        last = job
    final.append((last.status, last.progress_current, last.progress_total))
threads = [threading.Thread(target=watch) for _ in range(int(sys.argv[4]))]
for t in threads: t.start()
print("watching", flush=True)
for t in threads: t.join()
print(len(final), len(set(final)), *final[0], flush=True)
"""


def site(pages: int) -> SiteServer:
    def page(n: int) -> object:
        def handle(request: Request) -> Response:
            if f"session={SESSION}" not in request.cookie:
                return Response(status=302, headers=[("Location", "/login")])
            return html(f"page {n}", *[f"/p/{k}" for k in (2 * n + 1, 2 * n + 2) if k < pages])
        return handle

    return SiteServer(Routes({("127.0.0.1", f"/p/{n}"): page(n) for n in range(pages)})).start()


def peak_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024


def test_a_thousand_watchers_all_see_the_end_of_a_crawl(tmp_path: Path, database_url: str) -> None:
    pages = 300
    env = {"QUAERO_DATA_DIR": str(tmp_path), "QUAERO_API_TOKEN": TOKEN, "QUAERO_DATABASE_URL": database_url}
    target = site(pages)
    manager = start_manager(env)
    executor = start_executor(env, manager.address, extra=["--workers", "8"])
    watching = None
    try:
        with ManagerClient.connect(manager.address, TOKEN) as client:
            client.auth.PutCredentials(auth_pb2.PutCredentialsRequest(id="w", site_domain="127.0.0.1", cookies=[
                auth_pb2.Cookie(name="session", value=SESSION, domain="127.0.0.1")]))
            client.definitions.CreateJobDefinition(definitions_pb2.CreateJobDefinitionRequest(
                job_definition=definitions_pb2.JobDefinition(id="watched", auth_id="w", crawl=definitions_pb2.CrawlConfig(
                    start_urls=[f"http://127.0.0.1:{target.port}/p/0"], max_depth=20, concurrency=8,
                    allowed_networks=[LOCAL_SITES]))))
            channel = open_channel(executor.address, TOKEN)
            run = executor_pb2_grpc.ExecutorStub(channel).ExecuteJobDefinition(
                executor_pb2.ExecuteJobDefinitionRequest(definition_id="watched"))
            channel.close()
            watching = subprocess.Popen([sys.executable, "-c", WATCH, manager.address, TOKEN, run.parent_job_id,
                                         str(WATCHERS)], stdout=subprocess.PIPE, text=True)
            assert watching.stdout is not None
            assert watching.stdout.readline().strip() == "watching"
            threads: list[int] = []

            def finished() -> bool:
                threads.append(len(list(Path(f"/proc/{manager.process.pid}/task").iterdir())))
                return (client.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=run.parent_job_id)).status
                        == jobs_pb2.JOB_STATUS_COMPLETED)

            final = wait_for(finished, 120, "the crawl to finish")
            assert final
            summary = watching.stdout.readline().split()
            watching.wait(60)
        streams, distinct, status, current, total = (int(part) for part in summary)
        assert streams == WATCHERS and distinct == 1, "every stream ended on the same, final state"
        assert status == jobs_pb2.JOB_STATUS_COMPLETED and current == total == pages
        assert peak_mib(manager.process.pid) < 300
        # No thread per stream (it was one each: 1,000 more): a handful of senders and a timer serve them all.
        assert max(threads) < 60, max(threads)
    finally:
        if watching is not None and watching.poll() is None:
            watching.kill()
        executor.stop()
        manager.stop()
        target.stop()
