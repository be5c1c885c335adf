//! Small helpers shared by several modules.

use time::format_description::FormatItem;
use time::macros::format_description;

/// RFC 3339, UTC, microsecond precision: sortable as text and exact enough
/// to order calls.
const STAMP: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// Now, as RFC 3339 UTC with microseconds.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(STAMP)
        .unwrap_or_default()
}
