#!/usr/bin/env python3
"""Build, verify and run Quaero jobs.

    python3 build.py demo     the main job: both services on SQLite + an authenticated crawl of a demo site
    python3 build.py test     everything CI checks: stubs current, lint, both services start, the test suite
    python3 build.py gen      regenerate the gRPC stubs in quaero/api/ from protos/
    python3 build.py verify   check that the stubs are current and that both services start (health SERVING)
    python3 build.py bench    run the benchmarks in bench/
    python3 build.py browser  install Chromium for render = "js" (apt-get; `test` and `bench` do it when missing)

On a fresh clone it first creates .venv/ and installs the project into it (editable, with dev extras),
then re-runs itself inside that environment: nothing has to be installed by hand.
"""
from __future__ import annotations

import filecmp
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
VENV_PY = VENV / "bin" / "python"
GEN = ROOT / "quaero" / "api"  # generated: never edited by hand
PROTOS = ROOT / "protos"
API_BASELINE = PROTOS / "v1-baseline.binpb"  # buf image of the published API (buf breaking compares with it)
# protoc writes `from quaero.api.manager.v1 import ...` (the proto package); the stubs live in quaero.api.
_IMPORTS = re.compile(r"^(from|import) quaero\.(manager|executor)\b", re.MULTILINE)
_MODULE_NAME = re.compile(r"(BuildTopDescriptorsAndMessages\(DESCRIPTOR, ')quaero\.(manager|executor)\.")


def _in_venv() -> bool:
    return Path(sys.prefix).resolve() == VENV.resolve()


def bootstrap() -> None:
    """Create .venv and install the project when missing or when pyproject.toml changed."""
    stamp = VENV / ".quaero-installed"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not VENV_PY.exists():
        print("build: creating .venv", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    if not stamp.exists() or stamp.read_text() != wanted:
        print("build: installing the project and its dependencies into .venv", flush=True)
        pip = [str(VENV_PY), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
        subprocess.run([*pip, "--upgrade", "pip"], check=True)
        subprocess.run([*pip, "-e", f"{ROOT}[dev]"], check=True)
        stamp.write_text(wanted)
    if not _in_venv():
        os.execv(str(VENV_PY), [str(VENV_PY), str(Path(__file__).resolve()), *sys.argv[1:]])


def generate(out: Path) -> None:
    """Generate Python, gRPC and typed (.pyi) stubs from protos/ into out/."""
    from importlib import resources

    import grpc_tools

    well_known = str(resources.files(grpc_tools) / "_proto")
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    plugin_dir = Path(sys.executable).parent
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTOS}", f"-I{well_known}",
            f"--plugin=protoc-gen-mypy={plugin_dir / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={plugin_dir / 'protoc-gen-mypy_grpc'}",
            f"--python_out={tmp}", f"--grpc_python_out={tmp}", f"--mypy_out={tmp}", f"--mypy_grpc_out={tmp}",
            *sources,
        ]
        result = subprocess.run(args, capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"build: protoc failed:\n{result.stderr}")
        # Move quaero/<service>/v1 from protoc's output to out/<service>/v1, rewriting the imports of the
        # generated modules (and the module names they register) to their place under quaero.api. The
        # serialized descriptors are left alone: the proto package stays quaero.manager.v1 on the wire.
        produced = Path(tmp) / "quaero"
        for source in produced.rglob("*.py*"):
            target = out / source.relative_to(produced)
            target.parent.mkdir(parents=True, exist_ok=True)
            text = _MODULE_NAME.sub(r"\1quaero.api.\2.", _IMPORTS.sub(r"\1 quaero.api.\2", source.read_text()))
            target.write_text(text)
    # Regular packages (not namespace packages) so that setuptools and mypy find them.
    for directory in [out, *out.rglob("*")]:
        if directory.is_dir() and directory.name != "__pycache__":
            (directory / "__init__.py").touch()


def check_stubs_current() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        generate(fresh)
        stale = []
        for path in sorted(fresh.rglob("*")):
            if path.is_file():
                committed = GEN / path.relative_to(fresh)
                if not committed.exists() or not filecmp.cmp(path, committed, shallow=False):
                    stale.append(str(path.relative_to(fresh)))
        for path in sorted(GEN.rglob("*.py*")):
            if path.is_file() and not (fresh / path.relative_to(GEN)).exists() and "__pycache__" not in path.parts:
                stale.append(str(path.relative_to(GEN)))
        if stale:
            sys.exit("build: quaero/api/ is stale against protos/ (run `python3 build.py gen` and commit): " + ", ".join(stale))
    print("build: stubs in quaero/api/ are current with protos/", flush=True)


def lint() -> None:
    checks = {"ruff": ["ruff", "check", "quaero", "manager_service", "executor_service", "tests", "bench", "build.py"],
              "mypy": ["mypy", "quaero", "manager_service", "executor_service", "bench"]}
    for name, arguments in checks.items():
        if subprocess.run([str(VENV_PY), "-m", *arguments], cwd=ROOT).returncode != 0:
            raise SystemExit(f"build: {name} found problems (listed above)")
    print("build: ruff and mypy clean", flush=True)


BUF_VERSION = "1.75.0"


def _npm(arguments: list[str], what: str) -> bool:
    """Runs npm (Node.js comes with the machine image; buf and the Node.js client come from npm). Without
    npm: a failure under CI=true, a notice otherwise (False)."""
    if not shutil.which("npm"):
        message = f"build: npm is not installed, so {what} cannot run"
        if os.environ.get("CI", "").lower() == "true":
            sys.exit(message)
        print(message + "; skipped", flush=True)
        return False
    _quietly(["npm", *arguments, "--silent", "--no-audit", "--no-fund"], f"installing {what}")
    return True


def buf_lint() -> None:
    """buf lint (STANDARD rules, see protos/buf.yaml) and buf breaking against the published API, with buf
    installed from npm into .venv/buf."""
    prefix = VENV / "buf"
    binary = prefix / "node_modules" / ".bin" / "buf"
    if not binary.exists() and not _npm(["install", "--no-save", "--prefix", str(prefix),
                                         f"@bufbuild/buf@{BUF_VERSION}"], "buf lint"):
        return
    subprocess.run([str(binary), "lint"], check=True, cwd=PROTOS)
    # The published v1 API, as an image: a change that would break a client built against it (a field
    # renamed, renumbered or retyped, a method removed) fails here. Additions pass.
    if subprocess.run([str(binary), "breaking", "--against", API_BASELINE.name], cwd=PROTOS).returncode != 0:
        sys.exit("build: protos/ would break clients of the published v1 API (listed above); keep the change "
                 "compatible, or, for a deliberate v1 change, rebuild the baseline: "
                 f"cd protos && {binary} build -o {API_BASELINE.name}")
    print("build: buf lint clean, and compatible with the published v1 API", flush=True)


def node_client() -> None:
    """The Node.js client the tests drive (clients/node: @grpc/grpc-js, @grpc/proto-loader), from its lock file."""
    client = ROOT / "clients" / "node"
    if not (client / "node_modules" / "@grpc" / "grpc-js").is_dir():
        _npm(["ci", "--prefix", str(client)], "the Node.js client")


def _quietly(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"build: {what} failed:\n{result.stdout[-2000:]}{result.stderr[-4000:]}")


def verify_services() -> None:
    """Build a wheel from a clean export of the tree (the files git tracks or would track), install it into
    a fresh virtual environment, and start both services from its console scripts until health SERVING,
    and the console until it serves a page and a vendored script:
    a file left out of the package, or an import that only works from the source tree, fails here."""
    from quaero.rpc.server import parse_banner
    from quaero.testing.processes import wait_serving

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        export, dist, venv, data = work / "export", work / "dist", work / "venv", work / "data"
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                                check=True, capture_output=True).stdout.decode().split("\0")
        for name in filter(None, listed):
            source = ROOT / name
            if source.is_file():
                (export / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, export / name)
        _quietly([str(VENV_PY), "-m", "pip", "wheel", "-q", "--no-deps", "--disable-pip-version-check", "-w",
                  str(dist), str(export)], "building the wheel")
        _quietly([sys.executable, "-m", "venv", str(venv)], "creating a virtual environment")
        wheel = next(dist.glob("*.whl"))
        _quietly([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                  str(wheel)], f"installing {wheel.name}")
        env = {**os.environ, "QUAERO_DATA_DIR": str(data), "QUAERO_API_TOKEN": "build-verify-token",
               "PYTHONUNBUFFERED": "1"}
        started: list[subprocess.Popen[str]] = []
        try:
            manager = ""
            for program, arguments in (("quaero-manager", []), ("quaero-executor", ["--workers", "1"])):
                extra = ["--manager", manager] if manager else []
                with open(work / f"{program}.log", "w") as log:  # the child keeps its own handle
                    process = subprocess.Popen([str(venv / "bin" / program), "--listen", "127.0.0.1:0", *extra,
                                                *arguments], cwd=work, env=env, stdout=subprocess.PIPE, stderr=log,
                                               text=True)
                started.append(process)
                assert process.stdout is not None
                address = parse_banner(process.stdout.readline().strip())
                if not address:
                    sys.exit(f"build: {program} from the wheel did not start (exit code {process.wait(10)}):\n"
                             + (work / f"{program}.log").read_text()[-3000:])
                wait_serving(address)
                manager, executor = manager or address, address
            console = subprocess.Popen([str(venv / "bin" / "quaero-console"), "--listen", "127.0.0.1:0", "--manager",
                                        manager, "--executor", executor], cwd=work, env=env, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
            started.append(console)
            assert console.stdout is not None
            address = parse_banner(console.stdout.readline().strip())
            try:  # its templates and vendored scripts are package data: a page and a script must be served
                for path in ("/login", "/static/htmx-2.0.11.min.js"):
                    with urllib.request.urlopen(f"http://{address}{path}", timeout=10) as answer:
                        assert answer.status == 200
            except (OSError, AssertionError, ValueError) as error:
                sys.exit(f"build: the console from the wheel does not serve its pages ({error})")
            listed_jobs = subprocess.run([str(venv / "bin" / "quaero"), "--manager", manager, "jobs", "ls"], cwd=work,
                                         env=env, capture_output=True, text=True)
            if listed_jobs.returncode != 0:
                sys.exit(f"build: `quaero jobs ls` from the wheel failed: {listed_jobs.stderr.strip()}")
        finally:
            for process in reversed(started):
                process.terminate()
                process.wait(15)
    print(f"build: {wheel.name} installs into a fresh environment; both services and the console start from it",
          flush=True)


def ensure_browser(required: bool) -> None:
    """Debian's Chromium for render = "js" (never `playwright install`: its download is not reachable
    here). Installed with apt-get when missing; where that cannot be done, one line says what to run:
    CI stops there, a local run goes on and its browser tests skip, naming the same command."""
    from executor_service.render.chromium import CHROMIUM_ENV, INSTALL_COMMAND, BrowserMissing, chromium_path

    try:
        chromium_path()
        return
    except BrowserMissing as missing:
        problem = str(missing)
    if not os.environ.get(CHROMIUM_ENV) and os.geteuid() == 0 and shutil.which("apt-get"):
        print("build: installing Chromium for render = \"js\" (apt-get, about 35 s the first time)", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        installed = (subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env).returncode == 0
                     and subprocess.run(INSTALL_COMMAND.split(), capture_output=True, env=env).returncode == 0)
        if installed:
            chromium_path()
            return
        problem = f"`apt-get update && {INSTALL_COMMAND}` failed"
    message = f"build: no browser for render = \"js\": {problem}"
    if required:
        raise SystemExit(message)
    print(f"{message} (its tests skip)", file=sys.stderr, flush=True)


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def run_tests(extra: list[str]) -> int:
    env = dict(os.environ)
    return subprocess.call([str(VENV_PY), "-m", "pytest", *extra], cwd=ROOT, env=env)


def main() -> int:
    command = sys.argv[1] if len(sys.argv) > 1 else "help"
    if command in ("help", "-h", "--help"):
        print(__doc__)
        return 0
    bootstrap()
    if command == "gen":
        if GEN.exists():
            shutil.rmtree(GEN)
        generate(GEN)
        print("build: generated quaero/api/ from protos/")
        return 0
    if command == "verify":
        check_stubs_current()
        verify_services()
        return 0
    if command == "test":
        check_stubs_current()
        buf_lint()
        lint()
        verify_services()
        node_client()
        ensure_browser(required=_ci())
        code = run_tests(sys.argv[2:])
        return code
    if command == "demo":
        from quaero.demo.__main__ import main as demo_main

        return demo_main()
    if command == "browser":
        ensure_browser(required=True)
        print("build: Chromium is installed")
        return 0
    if command == "bench":
        ensure_browser(required=True)
        _quietly([str(VENV_PY), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-e", f"{ROOT}[bench]"],
                 "installing the benchmarks' baselines (Scrapy, Celery)")
        bullmq = ROOT / "bench" / "bullmq"
        if not (bullmq / "node_modules" / "bullmq").is_dir():
            _npm(["ci", "--prefix", str(bullmq)], "the BullMQ baseline")
        code = subprocess.call([str(VENV_PY), str(ROOT / "bench" / "manager_load.py"), *sys.argv[2:]], cwd=ROOT)
        code = code or subprocess.call([str(VENV_PY), str(ROOT / "bench" / "rpc_floor.py")], cwd=ROOT)
        code = code or subprocess.call([str(VENV_PY), str(ROOT / "bench" / "crawl_bench.py")], cwd=ROOT)
        # The manager as a job queue, beside Celery (RabbitMQ, Redis) and BullMQ.
        code = code or subprocess.call([str(VENV_PY), str(ROOT / "bench" / "queue_bench.py")], cwd=ROOT)
        # The run's session at work: the same crawl on a site that re-sets its session on every answer.
        code = code or subprocess.call([str(VENV_PY), str(ROOT / "bench" / "crawl_bench.py"), "--sliding", "--only",
                                        "bare,sqlite,postgres"], cwd=ROOT)
        code = code or subprocess.call([str(VENV_PY), str(ROOT / "bench" / "watch_load.py")], cwd=ROOT)
        code = code or subprocess.call([str(VENV_PY), str(ROOT / "bench" / "render_bench.py")], cwd=ROOT)
        code = code or subprocess.call([str(VENV_PY), str(ROOT / "bench" / "recrawl_bench.py")], cwd=ROOT)
        code = code or subprocess.call([str(VENV_PY), str(ROOT / "bench" / "recrawl_bench.py"), "--render-ms", "20"],
                                       cwd=ROOT)
        code = code or subprocess.call([str(VENV_PY), str(ROOT / "bench" / "search_bench.py")], cwd=ROOT)
        code = code or subprocess.call([str(VENV_PY), str(ROOT / "bench" / "prune_bench.py")], cwd=ROOT)
        code = code or subprocess.call([str(VENV_PY), str(ROOT / "bench" / "console_bench.py")], cwd=ROOT)
        return code or subprocess.call([str(VENV_PY), str(ROOT / "bench" / "long_run.py")], cwd=ROOT)
    print(f"build: unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main())
    except subprocess.CalledProcessError as failed:  # its own output is above; no traceback on top of it
        sys.exit(f"build: {' '.join(map(str, failed.cmd))[:200]} failed (exit {failed.returncode})")
