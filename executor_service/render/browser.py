"""Pages rendered by headless Chromium (`render = "js"`): one warm browser per executor, browser contexts
that each serve one run with one set of credentials, one page at a time, and each context's every request
through its own gate (gate.py), which applies the HTTP path's policy.

A context is never shared between runs or credentials. Between two pages of its run it is reset to what a
fresh one would hold for the next child: its page goes to about:blank (the last page's scripts, timers
and connections end), the gate forgets the last page, the cookies go back to the stored credentials, and
the storage of every origin the last page touched is cleared. The context, its page and the page's
renderer process are kept, because making them for each page cost 2.7x the CPU (measured: a bare
Playwright crawler went from 6.0 to 2.8 pages/s on this machine when each page got a fresh context).

The browser runs on an asyncio loop in a thread of its own (Playwright's async API); crawl threads call
render() and wait. At most `pages` pages render at once (2-4 saturate two cores). A page has one hard
deadline for navigation and settling (the run's request_timeout_seconds); settling is the DOM loaded,
then the network quiet for SETTLE_QUIET_SECONDS, or SETTLE_CAP_SECONDS at most. A browser is replaced
after `recycle_after` pages, when it crashes (it disconnects) or when it hangs: a page that will not
leave, or a page past its deadline by WATCHDOG_GRACE_SECONDS, gets the browser killed by PID. Either way
only the pages on that browser fail (BROWSER_CRASHED, BROWSER_HUNG); the next page gets a new browser.
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import socket
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from quaero.cookies import StoredCookie
from quaero.errors import Reason
from quaero.patterns import any_search

from ..crawl.content import MAX_BODY_BYTES
from ..crawl.control import SLICE_SECONDS, Control, FetchAborted
from ..crawl.cookie_jar import CookieJar
from ..crawl.fetcher import Fetcher, FetchPolicy, FetchResult
from ..crawl.hops import Stop, next_hop
from ..crawl.verdicts import FetchFailed, LoggedOut, Verdict
from ..metrics import BROWSERS_KILLED, BROWSERS_STARTED
from .chromium import BrowserMissing, Launcher, chromium_path, playwright_missing, prepare_launcher
from .gate import Gate, PageState, request_refusal

log = logging.getLogger("quaero.executor.render")
DEFAULT_PAGES = 2
DEFAULT_RECYCLE_AFTER = 500
SETTLE_QUIET_SECONDS = 0.2
SETTLE_CAP_SECONDS = 5.0
BODY_GRACE_SECONDS = 1.0
CLOSE_SECONDS = 5.0
PROBE_SECONDS = 3.0
WATCHDOG_GRACE_SECONDS = 15.0
LAUNCH_SECONDS = 30.0
# Chromium calls home (updates, accounts, safe browsing) despite Playwright's flags: those calls go to
# a proxy that refuses every connection (nowhere), and so does anything outside a page's context.
# No spare renderer: Chromium keeps one process ready for the next navigation, but for one context
# only, so with a context per run it was thrown away and made again on almost every page (measured:
# 88 renderer processes for 41 pages, 45 without it, and ~80 ms less CPU per page).
BROWSER_ARGS = ["--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-domain-reliability", "--no-first-run", "--disable-breakpad", "--disable-quic",
                "--disable-features=SpareRendererForSitePerProcess"]


def browser_cookie(cookie: StoredCookie) -> dict[str, Any]:
    """A stored cookie as Playwright's add_cookies takes it, with the same scope: `domain` without a dot
    is host-only and with one is a domain cookie; never `url=` (it turns secure off over http)."""
    data: dict[str, Any] = {
        "name": cookie.name, "value": cookie.value, "path": cookie.path or "/", "secure": cookie.secure,
        "httpOnly": cookie.http_only, "domain": cookie.domain if cookie.host_only else "." + cookie.domain,
        "expires": cookie.expires.timestamp() if cookie.expires else -1}
    same_site = cookie.same_site.strip().lower()
    if same_site == "none" and not cookie.secure:
        same_site = "lax"  # Chromium drops SameSite=None without Secure; Lax keeps it on the site's own requests
    if same_site in ("strict", "lax", "none"):
        data["sameSite"] = same_site.capitalize()
    return data


@dataclass
class _Browser:
    browser: Any
    pid: int | None
    started: int = 0  # pages begun on it
    alive: bool = True


@dataclass
class _Slot:
    """A context serving one run with one set of credentials, its page, and its gate."""
    key: tuple[str, str]  # (run id, digest of the credentials' id and the user agent)
    owner: _Browser
    context: Any
    page: Any
    gate: Gate
    cdp: Any
    busy: bool = False
    used: int = 0
    timeout: float = 0.0  # the context's default timeout for Playwright calls (a page's budget)
    origins: set[str] = field(default_factory=set)  # touched by the last page: cleared before the next


def context_key(run_id: str, auth_id: str, user_agent: str) -> tuple[str, str]:
    """Which pages may share a context: those of one run, signed in with one set of credentials (by id, not
    by value: the run's session changes its values from page to page, and each page gets a reset context
    holding its own cookies anyway), with one user agent."""
    return run_id, hashlib.sha256(repr((auth_id, user_agent)).encode()).hexdigest()


class PageWatch:
    """What one page does on the network, from Playwright's events: requests in flight (for settling),
    the origins it touched, the main frame's navigations and its last response."""

    def __init__(self, page: Any) -> None:
        self._page = page
        self.in_flight: dict[Any, float | None] = {}  # request -> when its response began (None: not yet)
        self.changed = time.monotonic()
        self.navigations: list[str] = []
        self.origins: set[str] = set()
        self.main_response: Any = None
        self._handlers = {"request": self._request, "requestfinished": self._finished,
                          "requestfailed": self._finished, "response": self._response}
        for event, handler in self._handlers.items():
            page.on(event, handler)

    def stop(self) -> None:
        for event, handler in self._handlers.items():
            self._page.remove_listener(event, handler)

    def _is_main(self, request: Any) -> bool:
        try:
            return bool(request.is_navigation_request()) and request.frame == self._page.main_frame
        except Exception:  # a request without a frame (a service worker's)
            return False

    def _request(self, request: Any) -> None:
        self.in_flight[request] = None
        self.changed = time.monotonic()
        parts = urlsplit(request.url)
        if parts.scheme in ("http", "https") and len(self.origins) < 100:
            self.origins.add(f"{parts.scheme}://{parts.netloc}")
        if self._is_main(request):
            self.navigations.append(request.url)

    def _finished(self, request: Any) -> None:
        self.in_flight.pop(request, None)
        self.changed = time.monotonic()

    def _response(self, response: Any) -> None:
        request = response.request
        if request in self.in_flight:
            self.in_flight[request] = time.monotonic()
        if self._is_main(request):
            self.main_response = response

    def pending(self) -> list[Any]:
        """Requests still to be waited for: those without a response, and those whose body began less
        than BODY_GRACE_SECONDS ago (Chromium never finishes some bodies a page leaves unread, such as
        Cache-Control: no-store answers to a fetch() whose response is not read)."""
        now = time.monotonic()
        return [r for r, began in self.in_flight.items() if began is None or now - began < BODY_GRACE_SECONDS]

    async def settle(self, cap: float) -> bool:
        """True when nothing was in flight for SETTLE_QUIET_SECONDS within `cap` seconds."""
        end = time.monotonic() + cap
        while time.monotonic() < end:
            if not self.pending() and time.monotonic() - self.changed >= SETTLE_QUIET_SECONDS:
                return True
            await asyncio.sleep(0.05)
        return False


class Renderer:
    def __init__(self, fetcher: Fetcher, pages: int = DEFAULT_PAGES, recycle_after: int = DEFAULT_RECYCLE_AFTER) -> None:
        self._fetcher = fetcher
        self._pages = max(1, pages)
        self._turns = threading.Semaphore(self._pages)
        self._recycle_after = max(1, recycle_after)
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._playwright: Any = None
        self._launcher: Launcher | None = None
        self._current: _Browser | None = None
        self._launching: asyncio.Lock | None = None
        self._slots: list[_Slot] = []
        self.launches = 0  # browsers started (tests and metrics)
        # The browser-wide proxy: a bound port nobody listens on, so every connection is refused at once.
        self._nowhere = socket.socket()
        self._nowhere.bind(("127.0.0.1", 0))

    # ---- the crawl thread's side -------------------------------------------------------------------
    def render(self, url: str, jar: CookieJar, credentials: list[StoredCookie], policy: FetchPolicy,
               control: Control) -> FetchResult:
        """The rendered page, or a Verdict; FetchAborted when the child is stopped meanwhile."""
        missing = playwright_missing()
        if missing:
            raise FetchFailed(Reason.BROWSER_UNAVAILABLE, f"cannot render {url}: {missing}")
        # The page's own URL, checked before a browser is involved (the gate checks it again, and every hop).
        refused = request_refusal(self._fetcher, "GET", url, True, policy, control)
        if refused is not None:
            raise refused
        while not self._turns.acquire(timeout=SLICE_SECONDS):
            control.check()
        try:
            loop = self._start()
            budget = policy.timeout
            future = asyncio.run_coroutine_threadsafe(self._render(url, jar, credentials, policy, budget), loop)
            give_up = time.monotonic() + budget + 2 * CLOSE_SECONDS + WATCHDOG_GRACE_SECONDS
            while True:
                try:
                    return future.result(timeout=SLICE_SECONDS)
                except FutureTimeout:
                    if control.cancelled.is_set():
                        future.cancel()
                        control.check()
                    if time.monotonic() > give_up:
                        future.cancel()
                        self._kill_current("a page went past its deadline and the browser did not answer")
                        raise FetchFailed(Reason.BROWSER_HUNG, f"the browser stopped answering while rendering "
                                          f"{url}; it was killed and is started again for the next page") from None
        finally:
            self._turns.release()

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._launching = asyncio.Lock()
                self._thread = threading.Thread(target=self._loop.run_forever, name="browser", daemon=True)
                self._thread.start()
            return self._loop

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = None
        if loop is not None and thread is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=CLOSE_SECONDS + 5)
            except Exception:  # a hung browser: kill it
                self._kill_current("the executor stopped and the browser would not close")
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
        for slot in self._slots:
            slot.gate.close()
        if self._launcher is not None:
            self._launcher.close()
        self._nowhere.close()

    def _kill_current(self, why: str) -> None:
        entry = self._current
        if entry is not None:
            _kill(entry, why)

    # ---- the browser loop --------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        browsers = {id(slot.owner): slot.owner for slot in self._slots}
        if self._current is not None:
            browsers[id(self._current)] = self._current
        for entry in browsers.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(entry.browser.close(), CLOSE_SECONDS)
        if self._playwright is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._playwright.stop(), CLOSE_SECONDS)

    async def _browser(self) -> _Browser:
        """The browser new contexts go to: the current one, or a new one when it died or did its share."""
        entry = self._current
        if entry is not None and entry.alive and entry.started < self._recycle_after:
            return entry
        self._current = None
        try:
            binary = chromium_path()
            if self._playwright is None:
                from playwright.async_api import async_playwright

                self._playwright = await async_playwright().start()
            if self._launcher is None:
                self._launcher = prepare_launcher(binary)
            browser = await self._playwright.chromium.launch(
                executable_path=self._launcher.executable, chromium_sandbox=True,
                proxy={"server": f"http://127.0.0.1:{self._nowhere.getsockname()[1]}"}, args=BROWSER_ARGS,
                handle_sigint=False, handle_sigterm=False, handle_sighup=False, timeout=LAUNCH_SECONDS * 1000)
        except BrowserMissing as missing:
            raise FetchFailed(Reason.BROWSER_UNAVAILABLE, str(missing)) from None
        except Exception as error:
            raise FetchFailed(Reason.BROWSER_UNAVAILABLE, f"the browser did not start: {_first_line(error)}") from None
        entry = _Browser(browser, self._launcher.browser_pid())
        browser.on("disconnected", lambda _browser: setattr(entry, "alive", False))
        self._current = entry
        self.launches += 1
        BROWSERS_STARTED.inc()
        log.info("event=browser_started pid=%s launches=%d", entry.pid, self.launches)
        return entry

    async def _slot(self, key: tuple[str, str], user_agent: str) -> _Slot:
        """An idle context for `key`: one kept for it, else a new one (in place of an idle context of
        another run or of a browser that is gone)."""
        assert self._launching is not None
        async with self._launching:
            entry = await self._browser()
            for slot in self._slots:
                if not slot.busy and slot.key == key and slot.owner is entry:
                    break
            else:
                stale = [s for s in self._slots if not s.busy and (s.owner is not entry or not s.owner.alive)]
                idle = [s for s in self._slots if not s.busy]
                if len(self._slots) >= self._pages or stale:
                    await self._drop((stale or idle)[0])
                slot = await self._new_slot(entry, key, user_agent)
            slot.busy = True
            entry.started += 1
            return slot

    async def _new_slot(self, entry: _Browser, key: tuple[str, str], user_agent: str) -> _Slot:
        loop = asyncio.get_running_loop()
        gate = await loop.run_in_executor(None, Gate, self._fetcher)
        try:
            # ignore_https_errors: the only certificate this context ever sees is the gate's own (gate.py);
            # the gate checks the site's certificate itself.
            context = await entry.browser.new_context(proxy={"server": gate.url}, service_workers="block",
                                                      accept_downloads=False, user_agent=user_agent,
                                                      ignore_https_errors=True)
            page = await context.new_page()
            cdp = await context.new_cdp_session(page)
        except BaseException:
            await loop.run_in_executor(None, gate.close)
            raise
        slot = _Slot(key, entry, context, page, gate, cdp)
        self._slots.append(slot)
        return slot

    async def _drop(self, slot: _Slot) -> None:
        if slot in self._slots:
            self._slots.remove(slot)
        await asyncio.get_running_loop().run_in_executor(None, slot.gate.close)
        if slot.owner.alive:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(slot.context.close(), CLOSE_SECONDS)
        owner = slot.owner
        if owner is not self._current and owner.alive and not any(s.owner is owner for s in self._slots):
            asyncio.ensure_future(_close_browser(owner))  # a retired browser with no context left

    async def _reset(self, slot: _Slot, cookies: list[dict[str, Any]]) -> None:
        """The context as a fresh one would be for the next child: the stored cookies only, and nothing
        the last page stored in any origin it touched."""
        for origin in sorted(slot.origins):
            await slot.cdp.send("Storage.clearDataForOrigin", {"origin": origin, "storageTypes": "all"})
        slot.origins.clear()
        await slot.context.clear_cookies()
        if cookies:
            await slot.context.add_cookies(cookies)

    async def _render(self, url: str, jar: CookieJar, credentials: list[StoredCookie], policy: FetchPolicy,
                      budget: float) -> FetchResult:
        try:
            slot = await self._slot(context_key(policy.run_id, policy.auth_id, policy.user_agent), policy.user_agent)
        except Verdict:
            raise
        except Exception as error:  # making the context failed: the browser died meanwhile, or broke
            current = self._current
            if current is not None and await _crashed(current):
                raise FetchFailed(Reason.BROWSER_CRASHED, f"the browser crashed before rendering {url}; it is "
                                  "started again for the next page") from None
            raise FetchFailed(Reason.FETCH_FAILED, f"the browser could not open a page for {url}: "
                              f"{_first_line(error)}") from None
        entry = slot.owner
        state = slot.gate.bind(jar, frozenset(c.name for c in credentials), policy)
        watch: PageWatch | None = None
        keep = True
        outcome: FetchResult | BaseException = FetchAborted("the page was stopped")
        try:
            if slot.timeout != budget:
                slot.context.set_default_timeout(budget * 1000)
                slot.timeout = budget
            await self._reset(slot, [browser_cookie(c) for c in credentials if not c.is_expired()])
            watch = PageWatch(slot.page)
            outcome = await asyncio.wait_for(self._visit(slot.page, watch, state, url, policy), budget)
        except TimeoutError:
            outcome = FetchFailed(Reason.RENDER_TIMEOUT, f"{url} was not rendered within {budget:g} s "
                                  "(request_timeout_seconds covers navigation and settling)")
        except Verdict as verdict:
            outcome = verdict
        except asyncio.CancelledError:
            outcome = FetchAborted("the page was stopped")
        except Exception as error:
            outcome = FetchFailed(Reason.FETCH_FAILED, f"the browser could not render {url}: {_first_line(error)}")
        finally:
            slot.gate.unbind()
            if watch is not None:
                watch.stop()
                slot.origins |= watch.origins
            # (a browser error, not a refusal: was it the browser dying?)
            if isinstance(outcome, Verdict) and outcome.reason == Reason.FETCH_FAILED and await _crashed(entry):
                outcome = FetchFailed(Reason.BROWSER_CRASHED, f"the browser crashed while rendering {url}; it is "
                                      "started again for the next page")
            if entry.alive:
                # The page's scripts, timers and connections end here, before the next page.
                keep = await _leave(slot)
                if not keep and entry.alive and not await _answers(slot.cdp):
                    _kill(entry, "the browser stopped answering")
                    outcome = FetchFailed(Reason.BROWSER_HUNG, f"the browser stopped answering while rendering {url}; "
                                          "it was killed and is started again for the next page")
            slot.used += 1
            slot.busy = False
            if not keep or not entry.alive:
                await self._drop(slot)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def _visit(self, page: Any, watch: PageWatch, state: PageState, url: str, policy: FetchPolicy) -> FetchResult:
        from playwright.async_api import Error as PlaywrightError
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        failure: Exception | None = None
        settled = False
        try:
            await page.goto(url, wait_until="domcontentloaded")
        except PlaywrightError as error:
            failure = error
        if failure is None:
            settled = await watch.settle(SETTLE_CAP_SECONDS)
        main = watch.navigations[-1] if watch.navigations else url
        refusal = state.refusal_for(main)
        if refusal is not None:
            raise refusal.verdict
        if isinstance(failure, PlaywrightTimeout):
            raise TimeoutError
        if failure is not None:
            raise FetchFailed(Reason.FETCH_FAILED, f"the browser could not load {main[:200]}: {_first_line(failure)}")
        final_url = page.url
        status = watch.main_response.status if watch.main_response is not None else 200
        retry_after = await _header(watch.main_response, "retry-after") if status in (429, 503) else None
        decision = next_hop(final_url, status, None, retry_after, [])
        if isinstance(decision, Stop):
            if decision.verdict.retry_after is not None:  # the run leaves the host alone that long, as on HTTP
                self._fetcher.spacing.back_off((policy.run_id, urlsplit(final_url).netloc), decision.verdict.retry_after)
            raise decision.verdict
        path = urlsplit(final_url).path
        if final_url != url and any_search(list(policy.logged_out), path):
            raise LoggedOut(Reason.AUTH_EXPIRED, f"not authenticated: {url} went to the login page {path[:200]}; "
                            "the session has expired or was logged out; import fresh cookies")
        html = await _content(page)
        notes: dict[str, Any] = {"rendered": True, "requests": state.requests}
        if not settled:  # the network never went quiet: rendered as it was at the cap
            notes["settled"] = False
            notes["in_flight"] = sorted(request.url[:300] for request in watch.pending())[:10]
        refused = [r for r in state.refusals if r.url != main]
        if refused:
            notes["requests_refused"] = [{"url": r.url[:300], "reason": str(r.verdict.reason)} for r in refused[:20]]
        if state.cookies_removed:
            notes["cookies_removed"] = state.cookies_removed
        return FetchResult(url, final_url, status, "text/html; charset=utf-8", html.encode("utf-8"),
                           hops=watch.navigations[:-1], notes=notes)


async def _header(response: Any, name: str) -> str | None:
    if response is None:
        return None
    with contextlib.suppress(Exception):
        value = await response.header_value(name)
        return str(value) if value is not None else None
    return None


# The document as HTML in one call, or null past the cap (so a huge one never crosses to Python).
_READ_DOCUMENT = """cap => {
  const root = document.documentElement;
  if (!root) return '';
  const html = root.outerHTML;
  if (html.length > cap) return null;
  const type = document.doctype ? '<!DOCTYPE ' + document.doctype.name + '>' : '';
  return type + html;
}"""


async def _content(page: Any) -> str:
    """The rendered HTML, refused past MAX_BODY_BYTES (a script can build any size of document)."""
    from playwright.async_api import Error as PlaywrightError

    for attempt in range(3):
        try:
            content = await page.evaluate(_READ_DOCUMENT, MAX_BODY_BYTES)
            if content is None:
                raise FetchFailed(Reason.RENDER_TOO_LARGE, f"the rendered page is larger than "
                                  f"{MAX_BODY_BYTES // 2**20} MiB (the limit for a page)")
            return str(content)
        except PlaywrightError:
            if attempt == 2:
                raise
            # a script navigated meanwhile: read the page it went to once it has loaded
            with contextlib.suppress(PlaywrightError):
                await page.wait_for_load_state("domcontentloaded")
    raise AssertionError("unreachable")


async def _leave(slot: _Slot) -> bool:
    """Sends the page the child left to about:blank, so its document, timers and connections are gone
    before the reset: nothing it runs afterwards reaches the next page. (Freezing the page instead was
    cheaper, but navigating thaws it, and a timer of the old page wrote into the next one: the test
    test_nothing_one_page_stores_reaches_the_next_page_of_its_run caught it.)"""
    try:
        await asyncio.wait_for(slot.page.goto("about:blank", timeout=CLOSE_SECONDS * 1000), CLOSE_SECONDS + 1)
        return True
    except Exception:
        return False


async def _answers(cdp: Any) -> bool:
    """Whether the browser process answers a trivial call within PROBE_SECONDS."""
    try:
        await asyncio.wait_for(cdp.send("Browser.getVersion"), PROBE_SECONDS)
        return True
    except Exception:
        return False


async def _crashed(entry: _Browser) -> bool:
    """Whether the browser is gone; a page's error can arrive a moment before the disconnection does."""
    for _ in range(10):
        if not entry.alive or not entry.browser.is_connected():
            entry.alive = False
            return True
        await asyncio.sleep(0.05)
    return False


async def _close_browser(entry: _Browser) -> None:
    try:
        await asyncio.wait_for(entry.browser.close(), CLOSE_SECONDS)
    except Exception:
        _kill(entry, "a retired browser did not close")


def _kill(entry: _Browser, why: str) -> None:
    entry.alive = False
    BROWSERS_KILLED.inc()
    if entry.pid:
        log.warning("event=browser_killed pid=%s why=%s", entry.pid, why)
        with contextlib.suppress(OSError):
            os.kill(entry.pid, signal.SIGKILL)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]
