"""Time units, the one home of the year convention (SPEC section 4: T = days to expiry / 365)."""

from __future__ import annotations

DAYS_PER_YEAR = 365.0  # calendar days in a year: every T, dt and annualised figure uses it
DAY = 1.0 / DAYS_PER_YEAR  # one day, years
SECONDS_PER_DAY = 86400.0
SECONDS_PER_YEAR = DAYS_PER_YEAR * SECONDS_PER_DAY
EXPIRY_HOUR_UTC = 8  # Deribit expiries settle at 08:00 UTC
