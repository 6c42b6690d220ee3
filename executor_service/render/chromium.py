"""Which Chromium renders pages, and how it is started: Debian's build (Playwright's own browser download
does not reach this network), with its sandbox on. As root, Chromium refuses its sandbox, so it is
started through a small wrapper as an unprivileged user; the wrapper also writes the browser's PID,
which the renderer's watchdog kills a hung browser by."""
from __future__ import annotations

import os
import pwd
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CHROMIUM = "/usr/lib/chromium/chromium"  # Debian's binary (/usr/bin/chromium is a shell wrapper)
CHROMIUM_ENV = "QUAERO_CHROMIUM"  # another browser binary (a non-Debian host)
BROWSER_USER_ENV = "QUAERO_BROWSER_USER"  # the unprivileged user the browser runs as when we are root
DEFAULT_BROWSER_USER = "nobody"
INSTALL_COMMAND = "apt-get install -y --no-install-recommends chromium fonts-liberation"
PLAYWRIGHT_INSTALL = "pip install 'quaero-jobs[js]'"


class BrowserMissing(Exception):
    """No browser can be started here; the message says what to install or set."""


def chromium_path() -> str:
    """The browser binary: $QUAERO_CHROMIUM, else Debian's. BrowserMissing names the fix."""
    path = os.environ.get(CHROMIUM_ENV, "").strip() or DEFAULT_CHROMIUM
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        where = f"${CHROMIUM_ENV} ({path})" if os.environ.get(CHROMIUM_ENV, "").strip() else path
        raise BrowserMissing(f"no Chromium at {where}: install it with `{INSTALL_COMMAND}` (or run "
                             f"`python3 build.py browser`), or set {CHROMIUM_ENV} to a Chromium binary")
    return path


def playwright_missing() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return f"Playwright is not installed: {PLAYWRIGHT_INSTALL}"
    return None


@dataclass
class Launcher:
    """The executable Playwright starts (the wrapper, which keeps Chromium's sandbox on) and where the
    browser's PID is written."""
    executable: str
    pid_file: Path
    workdir: Path

    def browser_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def prepare_launcher(binary: str) -> Launcher:
    """A private directory with the wrapper script (and, as root, a home for the browser's user)."""
    workdir = Path(tempfile.mkdtemp(prefix="quaero-browser-"))
    pid_file = workdir / "browser.pid"
    wrapper = workdir / "chromium"
    lines = ["#!/bin/sh", f"echo $$ > '{pid_file}'"]
    if os.geteuid() == 0:
        user = os.environ.get(BROWSER_USER_ENV, "").strip() or DEFAULT_BROWSER_USER
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise BrowserMissing(f"the browser's user {user!r} does not exist (set {BROWSER_USER_ENV} to an "
                                 "unprivileged user)") from None
        home = workdir / "home"
        home.mkdir()
        os.chown(home, entry.pw_uid, entry.pw_gid)
        workdir.chmod(0o711)  # the browser's user reaches its home, and nothing else here
        # Playwright makes the profile directory as root (mode 700): hand it to the browser's user.
        lines += [f'for a in "$@"; do case "$a" in --user-data-dir=*) chown -R {entry.pw_uid}:{entry.pw_gid} '
                  '"${a#--user-data-dir=}";; esac; done',
                  f"exec setpriv --reuid={entry.pw_uid} --regid={entry.pw_gid} --clear-groups env HOME='{home}' "
                  f"'{binary}' \"$@\""]
    else:
        lines.append(f"exec '{binary}' \"$@\"")
    wrapper.write_text("\n".join(lines) + "\n")
    wrapper.chmod(stat.S_IRWXU)
    return Launcher(str(wrapper), pid_file, workdir)
