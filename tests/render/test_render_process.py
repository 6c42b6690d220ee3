"""render = "js" in the executor as a real process: a crawl renders, and SIGTERM in the middle of rendering
stops the executor with its browser; no Chromium or driver process outlives it."""
from __future__ import annotations

import threading
import time
from pathlib import Path

from quaero.api.executor.v1 import executor_pb2, executor_pb2_grpc
from quaero.api.manager.v1 import auth_pb2, definitions_pb2, jobs_pb2
from quaero.client import ManagerClient
from quaero.rpc.channel import open_channel
from quaero.testing.processes import start_executor, start_manager
from quaero.testing.site import Request, Response, SiteServer
from quaero.testing.spa import APP, SESSION, SpaApp

TOKEN = "render-process-token"


def descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        children = [child for child, parent in parents.items() if parent == pid]
        found.update(children)
        todo += children
    return found


def alive(pid: int) -> bool:
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def test_the_executor_stops_with_its_browser_even_mid_render(tmp_path: Path) -> None:
    app = SpaApp(30, "process-session")
    held = threading.Event()

    def site(request: Request) -> Response:
        if request.path == "/api/page/7":
            held.set()
            time.sleep(20)  # page 7 is mid-render when the executor is told to stop
        return app(request)

    server = SiteServer(site).start()
    env = {"QUAERO_DATA_DIR": str(tmp_path), "QUAERO_API_TOKEN": TOKEN, "QUAERO_RESOLVE": f"{APP}=127.0.0.1"}
    manager = start_manager(env)
    executor = start_executor(env, manager.address, extra=["--workers", "2"])
    try:
        client = ManagerClient.connect(manager.address, TOKEN)
        client.auth.PutCredentials(auth_pb2.PutCredentialsRequest(id="spa", site_domain=APP, cookies=[
            auth_pb2.Cookie(name=SESSION, value="process-session", domain=APP, path="/")]))
        client.definitions.CreateJobDefinition(definitions_pb2.CreateJobDefinitionRequest(
            job_definition=definitions_pb2.JobDefinition(id="spa", auth_id="spa", crawl=definitions_pb2.CrawlConfig(
                start_urls=[f"http://{APP}:{server.port}/"], max_depth=10, concurrency=2,
                allowed_networks=["127.0.0.1/32"], render=definitions_pb2.RENDER_MODE_JS))))
        channel = open_channel(executor.address, TOKEN)
        run = executor_pb2_grpc.ExecutorStub(channel).ExecuteJobDefinition(
            executor_pb2.ExecuteJobDefinitionRequest(definition_id="spa")).parent_job_id
        assert held.wait(60), "page 7 was never rendered"
        browser = {pid for pid in descendants(executor.process.pid)
                   if Path(f"/proc/{pid}/comm").exists() and Path(f"/proc/{pid}/comm").read_text().strip()
                   in ("chromium", "node")}
        assert browser, "no browser under the executor"
        rendered = [child for child in client.iter_children(run) if child.status == jobs_pb2.JOB_STATUS_COMPLETED]
        assert rendered and all(child.result["rendered"] for child in rendered)
        started = time.monotonic()
        assert executor.stop() == 0
        assert time.monotonic() - started < 15
        time.sleep(1)
        assert not [pid for pid in browser if alive(pid)]
        channel.close()
        client.close()
    finally:
        executor.stop()
        manager.stop()
        server.stop()
