//! The header pre-checks of the malformed-request stage (http.md §2.2).

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

use super::ProtocolVersion;

/// The clock-skew window for request timestamps: strictly less than 15 minutes.
pub const DEFAULT_CLOCK_SKEW: TimeDelta = TimeDelta::seconds(900);

/// Why a request's authentication headers were refused before any key was looked at.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Required headers absent or empty, named in the fixed order of http.md §1.3.1.
    #[error("missing required authentication header(s) {}", quoted(.0))]
    Missing(Vec<&'static str>),
    /// `X-Ops-Timestamp` is not `YYYY-MM-DDTHH:MM:SS[Z]`.
    #[error("bad header(s) 'X-Ops-Timestamp'")]
    BadTimestamp,
    /// The timestamp is outside the clock-skew window.
    #[error("Failed to authenticate as {0}. Synchronize the clock on your host.")]
    ClockSkew(String),
    /// `X-Ops-Sign` names no supported version/algorithm.
    #[error("Unsupported authentication protocol version")]
    UnsupportedVersion,
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The authentication headers of a request that passed the pre-checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `X-Ops-UserId`, verbatim.
    pub user_id: String,
    /// `X-Ops-Timestamp`, verbatim (it enters the canonical string as sent).
    pub timestamp: String,
    /// The protocol version from `X-Ops-Sign`.
    pub version: ProtocolVersion,
    /// `X-Ops-Content-Hash`, as sent.
    pub content_hash: String,
    /// `X-Ops-Authorization-1..N` joined, stopping at the first missing index.
    pub signature: String,
    /// `X-Ops-Server-API-Version`, if sent.
    pub server_api_version: Option<String>,
}

impl SignedHeaders {
    /// Runs the pre-checks of http.md §2.2 in order. `header` looks a header up by name,
    /// case-insensitively; an empty value counts as absent.
    ///
    /// # Errors
    /// The first failing check, as the server must report it.
    pub fn check<'a>(
        header: impl Fn(&str) -> Option<&'a str>,
        now: DateTime<Utc>,
        skew: TimeDelta,
    ) -> Result<SignedHeaders, HeaderError> {
        let get = |name: &str| header(name).filter(|v| !v.is_empty());
        let names = [
            "X-Ops-UserId",
            "X-Ops-Timestamp",
            "X-Ops-Sign",
            "X-Ops-Content-Hash",
        ];
        let missing: Vec<&'static str> = names.into_iter().filter(|n| get(n).is_none()).collect();
        if !missing.is_empty() {
            return Err(HeaderError::Missing(missing));
        }
        // Presence was checked just above.
        let user_id = get("X-Ops-UserId").unwrap_or_default();
        let timestamp = get("X-Ops-Timestamp").unwrap_or_default();
        let signed_at = parse_timestamp(timestamp).ok_or(HeaderError::BadTimestamp)?;
        if (now - signed_at).abs() >= skew {
            return Err(HeaderError::ClockSkew(user_id.to_owned()));
        }
        let version = ProtocolVersion::from_sign_header(get("X-Ops-Sign").unwrap_or_default())
            .ok_or(HeaderError::UnsupportedVersion)?;
        let mut signature = String::new();
        for n in 1.. {
            match header(&format!("X-Ops-Authorization-{n}")) {
                Some(line) => signature.push_str(line),
                None => break,
            }
        }
        Ok(SignedHeaders {
            user_id: user_id.to_owned(),
            timestamp: timestamp.to_owned(),
            version,
            content_hash: get("X-Ops-Content-Hash").unwrap_or_default().to_owned(),
            signature,
            server_api_version: header("X-Ops-Server-API-Version").map(str::to_owned),
        })
    }
}

/// Parses `X-Ops-Timestamp` as the original does: split on `-`, `T`, `:` and `Z`, drop
/// empty pieces, and require exactly six integers Y M D h m s, read as UTC. So a missing
/// `Z` is fine while fractions and offsets are not (http.md §2.2 step 2, §8.1 item 14).
pub fn parse_timestamp(value: &str) -> Option<DateTime<Utc>> {
    let fields: Vec<&str> = value
        .split(['-', 'T', ':', 'Z'])
        .filter(|p| !p.is_empty())
        .collect();
    let [y, mo, d, h, mi, s] = fields.as_slice() else {
        return None;
    };
    let num = |p: &str| -> Option<u32> {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            p.parse().ok()
        } else {
            None
        }
    };
    let date = NaiveDate::from_ymd_opt(num(y)? as i32, num(mo)?, num(d)?)?;
    let time = date.and_hms_opt(num(h)?, num(mi)?, num(s)?)?;
    Some(time.and_utc())
}
