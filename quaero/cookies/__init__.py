"""Cookies: the stored form (model), the rules (rules) and browser export files (files)."""
from .model import StoredCookie
from .rules import (
    MAX_COOKIE_BYTES,
    MAX_COOKIE_SET_BYTES,
    MAX_COOKIES_PER_DOMAIN,
    MAX_COOKIES_PER_JAR,
    MAX_EXPIRY,
    belongs_to_site,
    canonical_domain,
    canonical_site,
    clamp_expiry,
    default_path,
    domain_matches,
    is_cookie_value,
    is_ip_address,
    is_public_suffix,
    path_matches,
    registrable_domain,
    rejection_reason,
)

__all__ = [
    "MAX_COOKIE_SET_BYTES", "MAX_COOKIES_PER_DOMAIN", "MAX_COOKIES_PER_JAR", "MAX_COOKIE_BYTES", "MAX_EXPIRY", "StoredCookie",
    "belongs_to_site", "canonical_domain", "canonical_site", "clamp_expiry", "default_path", "domain_matches",
    "is_cookie_value", "is_ip_address", "is_public_suffix", "path_matches", "registrable_domain", "rejection_reason",
]
