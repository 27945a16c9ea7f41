//! Listing records: a query's filters, its page of records newest first, and the opaque cursor
//! of the next page.
//!
//! Generation ids are `gen-<ten-digit Unix seconds>-…`, so the stores' order of ids is the
//! order of arrival: a page is a range of ids read backwards from the cursor (or from
//! `until`), down to `since`. A page reads at most [`SCAN_BUDGET`] records: when the filters
//! match few of them, the page comes back short with a cursor that goes on from where the
//! reading stopped, so no request scans the whole store.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::UsageRecord;
use crate::dialect::Dialect;

/// Most records one page reads, matching or not.
pub const SCAN_BUDGET: usize = 20_000;

/// Largest page.
pub const MAX_LIMIT: usize = 500;

/// A record's outcome, as the listing filters it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// Answered without an error.
    Ok,
    /// Answered with an error (a status of 400 or more, or a stream that failed).
    Error,
    /// The client went away first.
    Cancelled,
}

impl StatusFilter {
    /// Parses `ok`, `error` or `cancelled`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ok" => StatusFilter::Ok,
            "error" => StatusFilter::Error,
            "cancelled" => StatusFilter::Cancelled,
            _ => return None,
        })
    }

    /// The filter a record passes.
    pub fn of(r: &UsageRecord) -> Self {
        if r.cancelled {
            StatusFilter::Cancelled
        } else if r.error.is_some() || r.status.is_none_or(|s| s >= 400) {
            StatusFilter::Error
        } else {
            StatusFilter::Ok
        }
    }
}

/// What a listing asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationQuery {
    /// Only this key's records.
    pub key: Option<String>,
    /// Only records of this public model.
    pub model: Option<String>,
    /// Only records this provider served.
    pub provider: Option<String>,
    /// Only records of this outcome.
    pub status: Option<StatusFilter>,
    /// Only records of this dialect.
    pub dialect: Option<Dialect>,
    /// Only records made at or after this time (Unix seconds).
    pub since: Option<i64>,
    /// Only records made before this time (Unix seconds).
    pub until: Option<i64>,
    /// Most records on the page (at most [`MAX_LIMIT`]).
    pub limit: usize,
    /// Where the page starts: strictly before this id (decoded from the cursor).
    pub before: Option<String>,
}

impl GenerationQuery {
    /// Whether `r` passes the filters other than the key and the time range (which the
    /// stores read by).
    pub fn matches(&self, r: &UsageRecord) -> bool {
        self.model.as_ref().is_none_or(|m| *m == r.model)
            && self
                .provider
                .as_ref()
                .is_none_or(|p| r.provider.as_deref() == Some(p.as_str()))
            && self.status.is_none_or(|s| s == StatusFilter::of(r))
            && self.dialect.is_none_or(|d| d == r.dialect)
            && self
                .key
                .as_ref()
                .is_none_or(|k| r.key_id.as_deref() == Some(k.as_str()))
    }

    /// The ids a page reads: from `lower` (inclusive) up to `upper` (exclusive), backwards.
    pub fn id_range(&self) -> (String, String) {
        let lower = format!("gen-{:010}", self.since.unwrap_or(0).max(0));
        let until = match self.until {
            Some(t) => format!("gen-{:010}", t.max(0)),
            None => "gen-~".to_owned(),
        };
        let upper = match &self.before {
            Some(b) if *b < until => b.clone(),
            _ => until,
        };
        (lower, upper)
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationPage {
    /// The records, newest first.
    pub records: Vec<UsageRecord>,
    /// The cursor of the next page; `None` at the end.
    pub next: Option<String>,
}

/// The opaque cursor that goes on after `id`.
pub fn cursor_after(id: &str) -> String {
    URL_SAFE_NO_PAD.encode(id)
}

/// The id a cursor goes on after; `None` for what is not a cursor of ours.
pub fn cursor_id(cursor: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let id = String::from_utf8(bytes).ok()?;
    id.starts_with("gen-").then_some(id)
}

/// Reads a page from ids given newest first (`ids` yields each id, or an error), loading each
/// record with `load`: at most `limit` matching records, and at most [`SCAN_BUDGET`] read.
pub fn page<E>(
    q: &GenerationQuery,
    ids: impl Iterator<Item = Result<String, E>>,
    mut load: impl FnMut(&str) -> Result<Option<UsageRecord>, E>,
) -> Result<GenerationPage, E> {
    let mut records = Vec::new();
    let mut read = 0;
    let mut last = None;
    for id in ids {
        let id = id?;
        read += 1;
        if let Some(r) = load(&id)? {
            if q.matches(&r) {
                records.push(r);
            }
        }
        if records.len() == q.limit || read == SCAN_BUDGET {
            last = Some(id);
            break;
        }
    }
    Ok(GenerationPage {
        records,
        next: last.as_deref().map(cursor_after),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_is_opaque_and_only_ours_is_read() {
        let c = cursor_after("gen-1796640000-abc");
        assert!(!c.contains("gen-"));
        assert_eq!(cursor_id(&c).as_deref(), Some("gen-1796640000-abc"));
        assert_eq!(cursor_id("not a cursor"), None);
        assert_eq!(cursor_id(&URL_SAFE_NO_PAD.encode("other")), None);
    }

    #[test]
    fn the_range_is_the_narrowest_of_the_cursor_and_until() {
        let q = GenerationQuery {
            since: Some(100),
            until: Some(200),
            before: Some("gen-0000000150-x".into()),
            ..Default::default()
        };
        assert_eq!(
            q.id_range(),
            ("gen-0000000100".into(), "gen-0000000150-x".into())
        );
        let q = GenerationQuery {
            before: Some("gen-0000000250-x".into()),
            until: Some(200),
            ..Default::default()
        };
        assert_eq!(q.id_range().1, "gen-0000000200");
    }
}
