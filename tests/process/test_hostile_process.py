"""The executor as a real process against hostile sites: its memory stays bounded whatever the sites
send, no cookie value reaches its log even at DEBUG, and SIGTERM stops it while pages wait."""
from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from quaero.api.executor.v1 import executor_pb2, executor_pb2_grpc
from quaero.api.manager.v1 import auth_pb2, definitions_pb2, jobs_pb2
from quaero.client import ManagerClient
from quaero.rpc.channel import open_channel
from quaero.testing.harness import LOCAL_SITES
from quaero.testing.processes import ServiceProcess, start_executor, start_manager
from quaero.testing.site import Response, Routes, SiteServer, html
from tests.support.hostile import gzip_bomb, silent
from tests.support.hosts import RESOLVE

APP = "app.site.test"
TOKEN = "hostile-process-token"
MiB = 1024 * 1024


def environment(tmp_path: Path) -> dict[str, str]:
    return {"QUAERO_DATA_DIR": str(tmp_path), "QUAERO_API_TOKEN": TOKEN,
            "QUAERO_RESOLVE": ",".join(f"{h}={a}" for h, a in RESOLVE.items())}


def run(executor: ServiceProcess, client: ManagerClient, start: str, auth_id: str = "", **crawl: Any) -> str:
    definition = definitions_pb2.JobDefinition(id=f"hostile-{time.monotonic_ns()}", auth_id=auth_id,
                                               crawl=definitions_pb2.CrawlConfig(start_urls=[start],
                                                                                 allowed_networks=[LOCAL_SITES], **crawl))
    definition.max_child_failures = 1000
    client.definitions.CreateJobDefinition(definitions_pb2.CreateJobDefinitionRequest(job_definition=definition))
    channel = open_channel(executor.address, TOKEN)
    try:
        return executor_pb2_grpc.ExecutorStub(channel).ExecuteJobDefinition(
            executor_pb2.ExecuteJobDefinitionRequest(definition_id=definition.id)).parent_job_id
    finally:
        channel.close()


def wait_terminal(client: ManagerClient, parent_id: str, timeout: float) -> jobs_pb2.Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=parent_id))
        if job.status not in (jobs_pb2.JOB_STATUS_PENDING, jobs_pb2.JOB_STATUS_RUNNING):
            return job
        time.sleep(0.1)
    raise AssertionError(f"run {parent_id} did not end in {timeout} s")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_executor_memory_stays_bounded_whatever_the_sites_send(tmp_path: Path) -> None:
    # 16 workers at once on pages just under the 5 MiB body cap: deeply nested tag soup (the most memory
    # per byte for a parser), plain text, tens of thousands of links, and gzip bombs; robots.txt a bomb too.
    soup = "<html><body>" + "<b>" * (int(4.8 * MiB) // 3) + "</body></html>"
    text = "<html><body><p>" + "word " * (int(4.8 * MiB) // 5) + "</p></body></html>"
    links = "<html><body>" + "".join(f'<a href="/l/{n}/{"q" * 80}">{n}</a>' for n in range(45_000)) + "</body></html>"
    routes: dict[tuple[str, str], Any] = {(APP, "/robots.txt"): gzip_bomb(200 * MiB, "text/plain")}
    kinds = {"soup": 2, "text": 10, "links": 2, "bomb": 8}
    pages = [f"/{kind}/{n}" for kind, count in kinds.items() for n in range(count)]
    routes[(APP, "/")] = html("index", *pages)
    bodies = {"soup": Response(body=soup), "text": Response(body=text), "links": Response(body=links),
              "bomb": gzip_bomb(200 * MiB)}
    routes.update({(APP, p): bodies[p.split("/")[1]] for p in pages})
    site = SiteServer(Routes(routes)).start()
    env = environment(tmp_path)
    manager = start_manager(env)
    executor = start_executor(env, manager.address, extra=["--workers", "16"])
    client = ManagerClient.connect(manager.address, TOKEN)
    try:
        parent_id = run(executor, client, f"http://{APP}:{site.port}/", max_depth=1, max_pages=40, concurrency=16)
        final = wait_terminal(client, parent_id, 120)
        peak = peak_rss_mib(executor.process.pid)
        children = client.jobs.ListJobs(jobs_pb2.ListJobsRequest(parent_id=parent_id, page_size=1000)).jobs
        reasons = sorted({c.error_reason for c in children if c.name.rsplit("/", 2)[-2] in kinds})
        assert final.status == jobs_pb2.JOB_STATUS_COMPLETED and reasons == ["", "BODY_TOO_LARGE"], reasons
        print(f"executor peak RSS {peak:.0f} MiB")
        assert peak < 300, f"the executor's peak RSS was {peak:.0f} MiB"
    finally:
        client.close()
        executor.stop()
        manager.stop()
        site.stop()


def test_no_cookie_value_reaches_the_logs_even_at_debug(tmp_path: Path) -> None:
    stored, set_by_site = "stored-secret-7f3a9", "site-set-secret-c41d"
    site = SiteServer(Routes({
        (APP, "/"): Response(status=302, headers=[("Set-Cookie", f"fresh={set_by_site}; Path=/"),
                                                  ("Set-Cookie", f"bad={set_by_site}-\u00e9; Path=/"),
                                                  ("Location", "/next")]),
        (APP, "/next"): html("next", "/gone"),
        (APP, "/gone"): Response(status=403)})).start()
    env = environment(tmp_path)
    manager = start_manager({**env}, extra=["--log-level", "DEBUG"])
    executor = start_executor(env, manager.address, extra=["--log-level", "DEBUG"])
    client = ManagerClient.connect(manager.address, TOKEN)
    try:
        client.auth.PutCredentials(auth_pb2.PutCredentialsRequest(id="debug", site_domain=APP, cookies=[
            auth_pb2.Cookie(name="sid", value=stored, domain=APP)]))
        parent_id = run(executor, client, f"http://{APP}:{site.port}/", auth_id="debug", max_depth=2)
        wait_terminal(client, parent_id, 60)
        cookies_seen = [r.cookie for r in site.requests if r.path == "/next"]
        assert cookies_seen and stored in cookies_seen[0] and set_by_site in cookies_seen[0]
    finally:
        client.close()
        executor.stop()
        manager.stop()
        site.stop()
    logs = executor.logs() + manager.logs()
    assert "level=DEBUG" in logs, "the services did not log at DEBUG"
    assert stored not in logs and set_by_site not in logs


def test_sigterm_stops_the_executor_while_its_pages_wait_and_fetch(tmp_path: Path) -> None:
    site = SiteServer(Routes({(APP, "/"): html("index", *[f"/p{n}" for n in range(6)], "/silent"),
                              (APP, "/silent"): silent(max_seconds=120),
                              **{(APP, f"/p{n}"): html(f"p{n}") for n in range(6)}})).start()
    env = environment(tmp_path)
    manager = start_manager(env)
    executor = start_executor(env, manager.address, extra=["--workers", "8"])
    client = ManagerClient.connect(manager.address, TOKEN)
    try:
        parent_id = run(executor, client, f"http://{APP}:{site.port}/", max_depth=1, concurrency=8,
                        per_host_delay_seconds=60, request_timeout_seconds=300, ignore_robots_txt=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            stats = client.jobs.GetJobStats(jobs_pb2.GetJobStatsRequest(job_id=parent_id))
            if stats.running >= 3:
                break
            time.sleep(0.1)
        assert stats.running >= 3, "pages did not start waiting"
        stopping = time.monotonic()
        executor.process.send_signal(signal.SIGTERM)
        try:
            executor.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            executor.process.send_signal(signal.SIGUSR1)  # its threads' stacks, into its log
            time.sleep(1)
            raise AssertionError("the executor did not stop:\n" + executor.logs()[-6000:]) from None
        assert time.monotonic() - stopping < 8, "SIGTERM did not stop the executor promptly"
        assert executor.process.returncode == 0
    finally:
        client.close()
        executor.stop()
        manager.stop()
        site.stop()
