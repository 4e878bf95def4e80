"""Cache policy: when a cached access token is refreshed and when it stops being served.

A cached token goes through three states, with times in seconds:

- fresh until ``expires_on - margin``: served without fetching;
- stale until ``expires_on - gap``: served while a refresh is due;
- unusable after that, or when missing: callers wait for a fetch.

The margin is ``min(300, lifetime / 4)`` unless the caller fixes it, and the gap
is ``min(30, lifetime / 10, margin)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from securemysql.tokens.claims import AccessToken, numeric_claim

# azure-identity and MSAL (1.27 / 1.39) refresh a cached token 300 s before it expires.
_DEFAULT_MARGIN = 300.0
# For tokens shorter than 4 * 300 s the margin is a quarter of the lifetime, so a
# 5-minute token is served for 225 s instead of being refreshed at once.
_MARGIN_FRACTION = 0.25
# A cached token is not handed out later than this before it expires, so that a
# login that takes a while still arrives with a valid token.
_MAX_SAFETY_GAP = 30.0
_SAFETY_GAP_FRACTION = 0.1
# Delay between refresh attempts after a failed refresh or one that returned no
# newer token. azure-identity itself does not re-request a token within 30 s.
MIN_RETRY_DELAY = 1.0
MAX_RETRY_DELAY = 30.0

FRESH = "fresh"  # served from cache without fetching
STALE = "stale"  # served from cache; a refresh is due
UNUSABLE = "unusable"  # missing, expired or inside the safety gap: callers wait for a fetch


def default_margin(lifetime: float) -> float:
    """Return the refresh margin for a token living ``lifetime`` s: min(300, lifetime / 4)."""
    return max(0.0, min(_DEFAULT_MARGIN, lifetime * _MARGIN_FRACTION))


def safety_gap(lifetime: float, margin: float) -> float:
    """Return how long before expiry a token stops being served: min(30, lifetime / 10, margin)."""
    return max(0.0, min(_MAX_SAFETY_GAP, lifetime * _SAFETY_GAP_FRACTION, margin))


def token_lifetime(token: AccessToken) -> float:
    """Return the token's full lifetime: from ``iat`` when present, else from fetch time."""
    issued_at = numeric_claim(token.claims, "iat")
    if issued_at is not None and issued_at < token.expires_on:
        return token.expires_on - issued_at
    return max(0.0, token.expires_on - token.fetched_at)


@dataclass(frozen=True)
class CacheEntry:
    """A cached token with its deadlines on both clocks.

    Each deadline exists as a wall-clock time (epoch seconds) and as a monotonic
    time (fetch time on the monotonic clock plus the remaining lifetime at fetch).
    A deadline has passed once either clock reaches it: a wall clock set back cannot
    stretch a token's life, and a monotonic clock that stood still while the host
    was suspended is caught by the wall clock.
    """

    token: AccessToken
    refresh_wall: float
    refresh_mono: float
    usable_wall: float
    usable_mono: float
    margin: float
    gap: float

    def state(self, wall: float, mono: float) -> str:
        """Return FRESH, STALE or UNUSABLE at wall-clock time ``wall`` and monotonic ``mono``."""
        if wall < self.refresh_wall and mono < self.refresh_mono:
            return FRESH
        if wall < self.usable_wall and mono < self.usable_mono:
            return STALE
        return UNUSABLE

    def seconds_until_refresh(self, wall: float, mono: float) -> float:
        """Return seconds until the refresh deadline on the earlier clock (negative when due)."""
        return min(self.refresh_wall - wall, self.refresh_mono - mono)

    def seconds_until_unusable(self, wall: float, mono: float) -> float:
        """Return seconds until the token stops being served, on the earlier clock."""
        return min(self.usable_wall - wall, self.usable_mono - mono)


def make_entry(
    token: AccessToken, fetched_mono: float, refresh_margin: Optional[float]
) -> CacheEntry:
    """Compute the deadlines of ``token``, fetched at monotonic time ``fetched_mono``.

    ``refresh_margin`` fixes the margin in seconds; None means ``min(300, lifetime / 4)``.
    """
    lifetime = token_lifetime(token)
    margin = default_margin(lifetime) if refresh_margin is None else refresh_margin
    gap = safety_gap(lifetime, margin)

    # Remaining life measured at fetch time, carried over to the monotonic clock.
    expires_mono = fetched_mono + (token.expires_on - token.fetched_at)
    return CacheEntry(
        token=token,
        refresh_wall=token.expires_on - margin,
        refresh_mono=expires_mono - margin,
        usable_wall=token.expires_on - gap,
        usable_mono=expires_mono - gap,
        margin=margin,
        gap=gap,
    )


def retry_delay(
    entry: Optional[CacheEntry], *, wall: float, mono: float, failures_in_row: int
) -> float:
    """Return the pause in seconds before the next refresh attempt after an unsuccessful one.

    With a usable cached token: a quarter of its remaining usable time, from 1 to
    30 s. Without one: 2 ** failures_in_row seconds, at most 30 s.
    """
    if entry is not None and entry.state(wall, mono) != UNUSABLE:
        remaining = entry.seconds_until_unusable(wall, mono)
        return min(MAX_RETRY_DELAY, max(MIN_RETRY_DELAY, remaining / 4))
    return min(MAX_RETRY_DELAY, 2.0 ** min(failures_in_row, 5))
