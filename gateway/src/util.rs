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

/// The longest agent-chosen string (tool name, task id) echoed back or
/// written to a record; longer ones are cut with a marker.
pub const MAX_ECHO: usize = 128;

/// `s` cut to [`MAX_ECHO`] characters, marked when cut.
pub fn capped(s: &str) -> String {
    if s.chars().count() <= MAX_ECHO {
        return s.to_string();
    }
    let head: String = s.chars().take(MAX_ECHO).collect();
    format!("{head}…(cut)")
}
