"""The `quaero` CLI as a process: exit codes and one line on stderr, `quaero up` and its signals, and
the demo main job end to end."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


def test_a_failure_is_one_line_and_an_exit_code_never_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "QUAERO_API_TOKEN": "t", "QUAERO_MANAGER": "127.0.0.1:1"}
    missing = subprocess.run([sys.executable, "-m", "quaero", "auth", "import", str(tmp_path / "nope.json"),
                              "--site", "a.test"], env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert [line for line in missing.stderr.splitlines() if line] == [f"error: {tmp_path / 'nope.json'}: no such file"]
    usage = subprocess.run([sys.executable, "-m", "quaero", "auth", "import"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert usage.returncode == 2 and "Missing argument" in usage.stderr and "Traceback" not in usage.stderr


@pytest.mark.parametrize("stop_with", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_up_starts_the_services_and_the_console_and_stopping_it_stops_them(tmp_path: Path, stop_with: str) -> None:
    import signal
    import socket

    from quaero.testing.processes import wait_serving

    env = {**os.environ, "QUAERO_DATA_DIR": str(tmp_path), "QUAERO_API_TOKEN": ""}
    process = subprocess.Popen([sys.executable, "-m", "quaero", "up", "--manager-listen",
                                "127.0.0.1:0", "--executor-listen", "127.0.0.1:0", "--console-listen", "127.0.0.1:0"],
                               env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stderr is not None
        lines = [process.stdout.readline() for _ in range(4)]
        addresses = {line.split()[0]: line.split()[1] for line in lines[:3]}
        wait_serving(addresses["manager"])
        wait_serving(addresses["executor"])
        addresses["console"] = addresses["console"].removeprefix("http://").rstrip("/")
        assert httpx.get(f"http://{addresses['console']}/runs").headers["location"] == "/login?next=%2Fruns"
        assert (tmp_path / "api-token").exists() and str(tmp_path / "api-token") in lines[3]
        process.send_signal(getattr(signal, stop_with))
        code = process.wait(30)
        assert code == (-9 if stop_with == "SIGKILL" else 0)
        assert "Traceback" not in process.stderr.read()

        def still_serving() -> list[str]:
            alive = []
            for address in addresses.values():
                with socket.socket() as probe:
                    host, port = address.rsplit(":", 1)
                    if probe.connect_ex((host, int(port))) == 0:
                        alive.append(address)
            return alive

        deadline = time.monotonic() + 15
        while still_serving() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not still_serving(), f"services outlived `quaero up` ({stop_with})"
    finally:
        if process.poll() is None:
            process.kill()



def test_the_demo_main_job_passes(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "quaero.demo"], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "pages authenticated: 9 of 9" in result.stdout
    assert "cookies offered to the off-site host: 0" in result.stdout
    assert "demo passed" in result.stdout
