"""render = "js" over https: the gate ends the browser's TLS and is itself the site's TLS client, so every
request inside the tunnel gets the same policy as plain HTTP, and the site's certificate is checked as the
HTTP path checks it (the executor's QUAERO_CA_BUNDLE)."""
from __future__ import annotations

from typing import Any

from quaero.api.manager.v1 import definitions_pb2, jobs_pb2
from quaero.testing.harness import cookie
from quaero.testing.site import Response, SiteServer, html
from quaero.testing.spa import APP, OFF_SITE, SESSION, SpaApp

JS = definitions_pb2.RENDER_MODE_JS


def script_page(script: str, body: str = "") -> Response:
    return Response(body=f"<!doctype html><title>scripted</title><body>{body}<script>{script}</script></body>")


def test_an_https_app_is_crawled_with_its_secure_cookie_and_a_site_with_a_bad_certificate_is_refused(
        tls_harness: Any) -> None:
    app = SpaApp(6, "tls-session")
    site = SiteServer(app, tls=tls_harness.tls_context).start()
    tls_harness.sites.append(site)
    app.off_site = f"https://{OFF_SITE}:{site.port}"  # the test certificate does not name this host
    auth = tls_harness.credentials([cookie(SESSION, "tls-session", APP, secure=True)])
    result = tls_harness.crawl([f"https://{APP}:{site.port}/"], auth, render=JS, max_depth=5)
    assert {d.title for d in result.documents} == {f"Page {n}" for n in range(6)}
    assert all(d.final_url.startswith("https://") for d in result.documents)
    assert all(r.cookie == f"{SESSION}=tls-session" for r in site.requests_to(APP) if r.path != "/robots.txt")
    refused = {item["reason"] for child in result.children for item in child.result["requests_refused"]}
    assert refused == {"TLS_FAILED"}
    assert site.requests_to(OFF_SITE) == []  # no request got past the failed handshake


def test_inside_https_redirect_hops_and_script_navigations_get_the_whole_policy(tls_harness: Any) -> None:
    site = tls_harness.site({}, tls=tls_harness.tls_context)
    base = f"https://{APP}:{site.port}"
    site.handler.routes.update({
        (APP, "/robots.txt"): Response(body="User-agent: *\nDisallow: /private\n", content_type="text/plain"),
        (APP, "/to-logout"): Response(status=302, headers=[("Location", f"{base}/account/logout")]),
        (APP, "/to-private"): script_page("location.href = '/private/page';"),
        (APP, "/posts"): script_page("document.forms[0].submit();",
                                     "<form method=post action='/save'><input name=a value=1></form>"),
        (APP, "/fine"): html("fine"),
    })
    urls = [f"{base}/{path}" for path in ("to-logout", "to-private", "posts", "fine")]
    result = tls_harness.crawl(urls, render=JS, max_depth=0)
    children = {child.name: child for child in result.children}
    assert children[urls[0]].error_reason == "LOGOUT_REDIRECT"
    assert "robots.txt" in children[urls[1]].result["skipped"]
    assert children[urls[2]].error_reason == "NON_GET_NAVIGATION"
    assert children[urls[3]].status == jobs_pb2.JOB_STATUS_COMPLETED
    assert not {r.path for r in site.requests_to(APP)} & {"/account/logout", "/private/page", "/save"}


def test_a_secure_cookie_stays_off_the_plain_http_hop_of_an_https_redirect(tls_harness: Any) -> None:
    plain = tls_harness.site({})
    secure = tls_harness.site({}, tls=tls_harness.tls_context)
    secure.handler.routes[(APP, "/go")] = Response(status=302, headers=[("Location", f"http://{APP}:{plain.port}/landed")])
    plain.handler.routes[(APP, "/landed")] = html("landed")
    auth = tls_harness.credentials([cookie("tok", "t", APP, secure=True), cookie("sid", "s", APP)])
    result = tls_harness.crawl([f"https://{APP}:{secure.port}/go"], auth, render=JS, max_depth=0)
    assert [d.final_url for d in result.documents] == [f"http://{APP}:{plain.port}/landed"]
    assert [r.cookie_names() for r in secure.requests_to(APP) if r.path == "/go"] == [{"tok", "sid"}]
    assert [r.cookie_names() for r in plain.requests_to(APP) if r.path == "/landed"] == [{"sid"}]
