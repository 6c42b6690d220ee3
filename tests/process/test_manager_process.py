"""The manager as a real process: start-up, token file, reflection, health, SIGTERM, kill -9."""
from __future__ import annotations

import ctypes
import os
import signal
import stat
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2, struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2

from quaero.api.manager.v1 import jobs_pb2
from quaero.client import ManagerClient
from quaero.testing.processes import start_manager


def test_first_start_creates_private_token_files_one_per_role(tmp_path: Path) -> None:
    env = {"QUAERO_DATA_DIR": str(tmp_path), "QUAERO_API_TOKEN": "", "QUAERO_EXECUTOR_TOKEN": ""}
    manager = start_manager(env)
    try:
        tokens = {}
        for name in ("api-token", "executor-token"):
            token_file = tmp_path / name
            assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
            tokens[name] = token_file.read_text().strip()
            assert len(tokens[name]) >= 32
            assert tokens[name] not in manager.logs()
        assert tokens["api-token"] != tokens["executor-token"]
        with ManagerClient.connect(manager.address, tokens["api-token"]) as operator:
            assert operator.jobs.CreateJob(jobs_pb2.CreateJobRequest(type="t")).id
        with ManagerClient.connect(manager.address, tokens["executor-token"]) as executor:
            assert not executor.jobs.LeaseJobs(jobs_pb2.LeaseJobsRequest(worker_id="w")).leased_jobs
    finally:
        manager.stop()


def test_one_token_for_both_roles_is_refused_in_one_line(tmp_path: Path) -> None:
    env = {"QUAERO_DATA_DIR": str(tmp_path), "QUAERO_API_TOKEN": "same", "QUAERO_EXECUTOR_TOKEN": "same"}
    with pytest.raises(RuntimeError) as failed:
        start_manager(env)
    assert "operator token and the executor token are the same" in str(failed.value)
    assert "Traceback" not in str(failed.value)


@pytest.mark.parametrize("version", ["v1alpha", "v1"])
def test_reflection_lists_and_describes_the_services_in_both_versions(tmp_path: Path, version: str) -> None:
    manager = start_manager({"QUAERO_DATA_DIR": str(tmp_path), "QUAERO_API_TOKEN": "reflect-token"})
    try:
        with grpc.insecure_channel(manager.address) as channel:
            # v1 has the same messages as v1alpha under another package: the same classes encode it.
            call = channel.stream_stream(f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                                         request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                         response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
            requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                        reflection_pb2.ServerReflectionRequest(file_containing_symbol="quaero.manager.v1.JobManager"),
                        reflection_pb2.ServerReflectionRequest(
                            file_containing_symbol=f"grpc.reflection.{version}.ServerReflection")]
            responses = list(call(iter(requests), metadata=[("authorization", "Bearer reflect-token")], timeout=10))
        names = {service.name for service in responses[0].list_services_response.service}
        assert {"quaero.manager.v1.JobManager", "quaero.manager.v1.AuthStore", "quaero.manager.v1.JobDefinitions",
                "quaero.manager.v1.Documents", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection"} <= names
        for response in responses[1:]:
            assert response.WhichOneof("message_response") == "file_descriptor_response", response
            files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
                     for raw in response.file_descriptor_response.file_descriptor_proto]
            assert files and files[0].service
    finally:
        manager.stop()


def test_health_needs_no_token_and_sigterm_stops_gracefully(tmp_path: Path) -> None:
    manager = start_manager({"QUAERO_DATA_DIR": str(tmp_path), "QUAERO_API_TOKEN": "t"})
    with grpc.insecure_channel(manager.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="quaero.manager.v1.JobManager"), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert manager.stop() == 0
    assert "event=shutdown" in manager.logs()


def test_an_acknowledged_write_survives_kill_9_and_restart(tmp_path: Path) -> None:
    env = {"QUAERO_DATA_DIR": str(tmp_path), "QUAERO_API_TOKEN": "durable"}
    manager = start_manager(env)
    client = ManagerClient.connect(manager.address, "durable")
    job = client.jobs.CreateJob(jobs_pb2.CreateJobRequest(type="t"))
    patch = struct_pb2.Struct()
    patch.update({"auth_id": "site-1", "phase": "execution"})
    acknowledged = client.jobs.UpdateJobMetadata(jobs_pb2.UpdateJobMetadataRequest(job_id=job.id, metadata=patch))
    client.close()
    manager.kill9()
    assert manager.process.returncode == -9
    restarted = start_manager(env)
    try:
        client = ManagerClient.connect(restarted.address, "durable")
        after = client.jobs.GetJob(jobs_pb2.GetJobRequest(job_id=job.id))
        assert after.etag == acknowledged.etag
        assert after.metadata["auth_id"] == "site-1" and after.metadata["phase"] == "execution"
        client.close()
    finally:
        restarted.stop()


def test_a_port_in_use_gives_one_readable_line(tmp_path: Path) -> None:
    first = start_manager({"QUAERO_DATA_DIR": str(tmp_path / "a"), "QUAERO_API_TOKEN": "t"})
    try:
        import subprocess
        import sys

        os.makedirs(tmp_path / "b", exist_ok=True)
        result = subprocess.run([sys.executable, "-m", "manager_service", "--listen", first.address],
                                env={**os.environ, "QUAERO_DATA_DIR": str(tmp_path / "b")}, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        assert first.address.split(":")[1] in result.stderr.strip().splitlines()[-1]
    finally:
        first.stop()


def test_tls_when_given_a_certificate(tmp_path: Path) -> None:
    from quaero.testing.tls import make_certificate

    cert, key = make_certificate(tmp_path, ["localhost"])
    manager = start_manager({"QUAERO_DATA_DIR": str(tmp_path / "data"), "QUAERO_API_TOKEN": "tls-token",
                             "QUAERO_TLS_CERT": str(cert), "QUAERO_TLS_KEY": str(key)}, wait=False)
    try:
        with grpc.insecure_channel(manager.address) as plain:
            try:
                health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=2)
                raise AssertionError("a plaintext call reached the TLS server")
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE
        client = ManagerClient.connect(manager.address, "tls-token", tls_ca=cert)
        assert client.jobs.CreateJob(jobs_pb2.CreateJobRequest(type="over-tls")).type == "over-tls"
        client.close()
    finally:
        manager.stop()


def test_sigterm_stops_the_service_whichever_thread_the_kernel_gives_it_to(tmp_path: Path) -> None:
    # A process-wide SIGTERM lands on any thread that does not block it; gRPC's threads do not. Sent
    # to each of them in turn here (tgkill), which is what the kernel sometimes does on its own.
    libc = ctypes.CDLL(None, use_errno=True)
    for index in range(3):
        manager = start_manager({"QUAERO_DATA_DIR": str(tmp_path / str(index)), "QUAERO_API_TOKEN": "t"})
        pid = manager.process.pid
        others = sorted(int(tid) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid)
        assert len(others) > index, "the manager runs fewer threads than expected"
        assert libc.tgkill(pid, others[index], signal.SIGTERM) == 0, os.strerror(ctypes.get_errno())
        try:
            assert manager.process.wait(timeout=5) == 0
        finally:
            manager.stop()
        assert "event=shutdown" in manager.logs()


def test_the_data_directory_and_the_database_are_private(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    manager = start_manager({"QUAERO_DATA_DIR": str(fresh), "QUAERO_API_TOKEN": "t"})
    try:
        with ManagerClient.connect(manager.address, "t") as client:
            client.jobs.CreateJob(jobs_pb2.CreateJobRequest(type="t"))  # a write: the WAL exists now
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
        for name in ("quaero.db", "quaero.db-wal", "quaero.db-shm", "executor-token", "secret.key"):
            assert stat.S_IMODE((fresh / name).stat().st_mode) == 0o600, name
    finally:
        manager.stop()
    # What an older release left readable is made private at the next start.
    (fresh).chmod(0o755)
    (fresh / "quaero.db").chmod(0o644)
    manager = start_manager({"QUAERO_DATA_DIR": str(fresh), "QUAERO_API_TOKEN": "t"})
    manager.stop()
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    assert stat.S_IMODE((fresh / "quaero.db").stat().st_mode) == 0o600
