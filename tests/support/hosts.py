"""The host names the tests' sites answer for, and where the executor finds them (QUAERO_RESOLVE)."""
from __future__ import annotations

HOSTS = ["app.site.test", "sub.app.site.test", "other.site.test", "site.test", "evil.test", "app.site.test.evil.test",
         "notapp.site.test", "offsite.example.test", "app.site.test."]
# rebind.site.test is the site's own name, pointing at another loopback address (as DNS rebinding would).
RESOLVE = {**{host: "127.0.0.1" for host in HOSTS}, "rebind.site.test": "127.0.0.2"}
