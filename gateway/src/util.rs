//! Small helpers shared by several modules.

use time::format_description::FormatItem;
use time::macros::format_description;

/// RFC 3339, UTC, microsecond precision: sortable as text and exact enough
/// to order calls.
const STAMP: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// Now (system clock), as RFC 3339 UTC with microseconds.
pub fn now_rfc3339() -> String {
    stamp(time::OffsetDateTime::now_utc())
}

/// A time as RFC 3339 UTC with microseconds. Every stored time uses this
/// one fixed-width form, so stored times compare correctly as text.
pub fn stamp(t: time::OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .format(STAMP)
        .unwrap_or_default()
}

/// Parses a time written by [`stamp`].
pub fn parse_stamp(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}
