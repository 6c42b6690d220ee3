"""The `quaero` command line run in this process (as its entry point runs it: one-line errors, exit
codes), with its environment and working directory set for the call and its output captured."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from quaero.cli import run_cli
from quaero.testing.harness import CrawlHarness


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


class Cli:
    def __init__(self, harness: CrawlHarness | None, monkeypatch: pytest.MonkeyPatch,
                 capsys: pytest.CaptureFixture[str]) -> None:
        self.harness = harness
        self._monkeypatch = monkeypatch
        self._capsys = capsys

    def __call__(self, *args: str, token: str | None = None, cwd: Path | None = None,
                 manager: str | None = None) -> CliResult:
        harness = self.harness
        env = {"QUAERO_API_TOKEN": token if token is not None else (harness.manager.token if harness else ""),
               "QUAERO_MANAGER": manager or (harness.manager.address if harness else "127.0.0.1:1"),
               "QUAERO_EXECUTOR": harness.executor_address if harness else "127.0.0.1:1"}
        with self._monkeypatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            if cwd is not None:
                patch.chdir(cwd)
            self._capsys.readouterr()
            code = run_cli(list(args))
            captured = self._capsys.readouterr()
        return CliResult(code, captured.out, captured.err)


def one_line_error(result: CliResult) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]
