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
from quaero.testing.procfs import comm, process_tree, running
from quaero.testing.site import Request, Response, SiteServer
from quaero.testing.spa import APP, SESSION, SpaApp

TOKEN = "render-process-token"


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
        browser = {pid for pid in process_tree(executor.process.pid) if comm(pid) in ("chromium", "node")}
        assert browser, "no browser under the executor"
        rendered = [child for child in client.iter_children(run) if child.status == jobs_pb2.JOB_STATUS_COMPLETED]
        assert rendered and all(child.result["rendered"] for child in rendered)
        started = time.monotonic()
        assert executor.stop() == 0
        assert time.monotonic() - started < 15
        time.sleep(1)
        assert not [pid for pid in browser if running(pid)]
        channel.close()
        client.close()
    finally:
        executor.stop()
        manager.stop()
        server.stop()
