//! The dashboard's logins (issue 16). Browsers cannot sign Chef requests, so a user's CLI
//! makes a signed request for a one-time login URL; its first visit trades the URL's token
//! for a session cookie bound to that user and organization, with an expiry. Both are
//! sealed with an HMAC key derived from the server key: every instance of a cluster
//! accepts the same cookie, and nobody without the key can forge one. Pure (the caller
//! passes the clock): the record of login URLs already used is in the store
//! (`Store::claim_login`), not here, so that every instance of a cluster sees it. A visit
//! opens the token ([`Dashboard::open_login`]), claims its [`Login::nonce`] in the store,
//! and only then starts the session ([`Dashboard::start_session`]).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use serde::{Deserialize, Serialize};

use crate::chef::PrincipalKind;

/// How long a login URL may be used, seconds.
pub const LOGIN_LIFETIME: i64 = 60;
/// How long a session lasts, seconds.
pub const SESSION_LIFETIME: i64 = 8 * 3600;
/// How far apart the clocks of a cluster's instances may be, seconds: the record of a
/// used login is kept this long past the login's expiry, so an instance whose clock is
/// behind the one that purges the record still finds it while it takes the login for
/// unexpired.
const CLOCK_SKEW: i64 = 60;

/// Who a login or session is for, until when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Sealed as a login token or as a session cookie: one is never taken for the other.
    #[serde(rename = "k")]
    kind: Kind,
    /// The user (or client) who asked.
    #[serde(rename = "u")]
    pub user: String,
    /// Whether `user` names a user or a client: Chef lets one of each share a name, and
    /// authorization reads a group's users and clients apart, so the name alone could let
    /// a client act as the user (or the other way round). A grant sealed without it does
    /// not open (the only such grants predate it): its holder logs in again.
    #[serde(rename = "p", with = "principal_code")]
    pub principal: PrincipalKind,
    /// The organization it is for.
    #[serde(rename = "o")]
    pub org: String,
    /// Unix seconds after which it is refused.
    #[serde(rename = "e")]
    pub expires: i64,
    /// Random: makes each seal unique, and names a login token once it is used.
    #[serde(rename = "n")]
    nonce: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Login,
    Session,
}

/// Why a token or cookie was refused (all answered the same way: log in again).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not sealed by this server, or damaged.
    #[error("not a valid dashboard login")]
    Forged,
    /// Past its expiry.
    #[error("the dashboard login expired")]
    Expired,
    /// For another organization than the URL's.
    #[error("the dashboard login is for another organization")]
    OtherOrg,
    /// A login URL visited a second time (the store's record says so; not decided here).
    #[error("the dashboard login URL was already used")]
    Used,
}

/// A login token found sealed here, unexpired and for its organization: not yet known to
/// be unused. Only this starts a session, so a session cookie never does.
#[derive(Debug)]
pub struct Login(Grant);

impl Login {
    /// Whom it logs in (a confirmation page shows it before the login is used).
    pub fn user(&self) -> &str {
        &self.0.user
    }

    /// Names this login in the store's record of used logins.
    pub fn nonce(&self) -> &str {
        &self.0.nonce
    }

    /// Until when (Unix seconds) the store must remember this login was used: past its
    /// expiry, by the clock skew a cluster may have.
    pub fn used_until(&self) -> i64 {
        self.0.expires + CLOCK_SKEW
    }
}

/// Issues and checks logins and sessions. Cheap to share behind an `Arc`.
pub struct Dashboard {
    key: [u8; 32],
}

impl Dashboard {
    /// Seals with `key` (derive it from the server key).
    pub fn new(key: [u8; 32]) -> Dashboard {
        Dashboard { key }
    }

    /// A one-time login token for `user` (a principal of that kind) in `org`, good for
    /// [`LOGIN_LIFETIME`].
    pub fn login(&self, user: &str, principal: PrincipalKind, org: &str, now: i64) -> String {
        self.seal(&grant(
            Kind::Login,
            user,
            principal,
            org,
            now + LOGIN_LIFETIME,
        ))
    }

    /// The login a token holds. Whether it was used already is the store's to say.
    ///
    /// # Errors
    /// A forged, expired or other organization's token.
    pub fn open_login(&self, token: &str, org: &str, now: i64) -> Result<Login, Refusal> {
        self.open(token, Kind::Login, org, now).map(Login)
    }

    /// A session cookie value and its grant for `login`, which its caller claimed.
    pub fn start_session(&self, login: Login, now: i64) -> (String, Grant) {
        let Grant {
            user,
            principal,
            org,
            ..
        } = login.0;
        let session = grant(
            Kind::Session,
            &user,
            principal,
            &org,
            now + SESSION_LIFETIME,
        );
        (self.seal(&session), session)
    }

    /// The session a cookie value holds.
    ///
    /// # Errors
    /// A forged, expired or other organization's cookie.
    pub fn session(&self, cookie: &str, org: &str, now: i64) -> Result<Grant, Refusal> {
        self.open(cookie, Kind::Session, org, now)
    }

    /// The token the page must send back with every write: derived from the session, so
    /// a page on another site, which cannot read it, cannot write (with the cookie's
    /// `SameSite`, the second guard against cross-site requests).
    pub fn csrf(&self, session: &Grant) -> String {
        B64.encode(self.mac(format!("csrf\0{}", session.nonce).as_bytes()))
    }

    fn seal(&self, grant: &Grant) -> String {
        let payload = B64.encode(serde_json::to_vec(grant).expect("a grant serializes"));
        let mac = B64.encode(self.mac(payload.as_bytes()));
        format!("{payload}.{mac}")
    }

    fn open(&self, sealed: &str, kind: Kind, org: &str, now: i64) -> Result<Grant, Refusal> {
        let (payload, mac) = sealed.split_once('.').ok_or(Refusal::Forged)?;
        let mac = B64.decode(mac).map_err(|_| Refusal::Forged)?;
        let expected = self.mac(payload.as_bytes());
        if mac.len() != expected.len() || !openssl::memcmp::eq(&mac, &expected) {
            return Err(Refusal::Forged);
        }
        let bytes = B64.decode(payload).map_err(|_| Refusal::Forged)?;
        let grant: Grant = serde_json::from_slice(&bytes).map_err(|_| Refusal::Forged)?;
        if grant.kind != kind {
            return Err(Refusal::Forged);
        }
        if grant.expires < now {
            return Err(Refusal::Expired);
        }
        if grant.org != org {
            return Err(Refusal::OtherOrg);
        }
        Ok(grant)
    }

    fn mac(&self, data: &[u8]) -> Vec<u8> {
        let key = PKey::hmac(&self.key).expect("an HMAC key");
        let mut signer = Signer::new(MessageDigest::sha256(), &key).expect("an HMAC signer");
        signer.update(data).expect("HMAC update");
        signer.sign_to_vec().expect("HMAC sign")
    }
}

fn grant(kind: Kind, user: &str, principal: PrincipalKind, org: &str, expires: i64) -> Grant {
    let mut nonce = [0u8; 16];
    openssl::rand::rand_bytes(&mut nonce).expect("OpenSSL random bytes");
    Grant {
        kind,
        user: user.to_owned(),
        principal,
        org: org.to_owned(),
        expires,
        nonce: B64.encode(nonce),
    }
}

/// A principal's kind in a sealed grant: one letter, as the grant's keys.
mod principal_code {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    use crate::chef::PrincipalKind;

    pub(super) fn serialize<S: Serializer>(kind: &PrincipalKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match kind {
            PrincipalKind::User => "u",
            PrincipalKind::Client => "c",
        })
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PrincipalKind, D::Error> {
        match <&str>::deserialize(d)? {
            "u" => Ok(PrincipalKind::User),
            "c" => Ok(PrincipalKind::Client),
            other => Err(D::Error::custom(format!("no principal kind {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A login for `user` in acme at `now`, opened and traded at once.
    fn session_for(d: &Dashboard, user: &str, now: i64) -> (String, Grant) {
        let login = d
            .open_login(
                &d.login(user, PrincipalKind::User, "acme", now),
                "acme",
                now,
            )
            .unwrap();
        d.start_session(login, now)
    }

    #[test]
    fn a_login_url_opens_for_its_org_and_gives_a_session() {
        let d = Dashboard::new([7; 32]);
        let token = d.login("alice", PrincipalKind::User, "acme", 1000);
        assert_eq!(
            d.open_login(&token, "other", 1001).unwrap_err(),
            Refusal::OtherOrg
        );
        let login = d.open_login(&token, "acme", 1001).unwrap();
        assert_eq!(login.used_until(), 1000 + LOGIN_LIFETIME + CLOCK_SKEW);
        // Every visit of one URL names the same login, on any instance (what the store's
        // record of used logins goes by); another URL names another.
        let again = Dashboard::new([7; 32]).open_login(&token, "acme", 1002);
        assert_eq!(again.unwrap().nonce(), login.nonce());
        let other = d.login("alice", PrincipalKind::User, "acme", 1000);
        assert_ne!(
            d.open_login(&other, "acme", 1001).unwrap().nonce(),
            login.nonce()
        );

        let (cookie, session) = d.start_session(login, 1001);
        assert_eq!(
            (session.user.as_str(), session.org.as_str()),
            ("alice", "acme")
        );
        assert_eq!(session.expires, 1001 + SESSION_LIFETIME);
        assert_eq!(d.session(&cookie, "acme", 1002), Ok(session.clone()));
        // Another instance with the same key accepts the cookie (a cluster).
        assert_eq!(
            Dashboard::new([7; 32]).session(&cookie, "acme", 1002),
            Ok(session)
        );
    }

    #[test]
    fn expired_forged_and_swapped_tokens_are_refused() {
        let d = Dashboard::new([7; 32]);
        let token = d.login("alice", PrincipalKind::User, "acme", 1000);
        assert_eq!(
            d.open_login(&token, "acme", 1000 + LOGIN_LIFETIME + 1)
                .unwrap_err(),
            Refusal::Expired
        );
        // A login token is not a session, nor the other way round.
        assert_eq!(d.session(&token, "acme", 1001), Err(Refusal::Forged));
        let (cookie, _) = session_for(&d, "bob", 1000);
        assert_eq!(
            d.open_login(&cookie, "acme", 1001).unwrap_err(),
            Refusal::Forged
        );
        assert_eq!(
            d.session(&cookie, "acme", 1000 + SESSION_LIFETIME + 1),
            Err(Refusal::Expired)
        );
        // Another key, an edited payload, garbage.
        assert_eq!(
            Dashboard::new([8; 32]).session(&cookie, "acme", 1001),
            Err(Refusal::Forged)
        );
        let (payload, mac) = cookie.split_once('.').unwrap();
        let edited = String::from_utf8(B64.decode(payload).unwrap())
            .unwrap()
            .replace("bob", "eve");
        let forged = format!("{}.{mac}", B64.encode(edited));
        assert_eq!(d.session(&forged, "acme", 1001), Err(Refusal::Forged));
        for junk in ["", ".", "x.y", "a.b.c"] {
            assert_eq!(d.session(junk, "acme", 1001), Err(Refusal::Forged));
            assert_eq!(
                d.open_login(junk, "acme", 1001).unwrap_err(),
                Refusal::Forged
            );
        }
    }

    #[test]
    fn a_session_keeps_the_kind_of_principal_that_logged_in() {
        let d = Dashboard::new([7; 32]);
        for kind in [PrincipalKind::User, PrincipalKind::Client] {
            let login = d
                .open_login(&d.login("twin", kind, "acme", 1000), "acme", 1000)
                .unwrap();
            let (cookie, session) = d.start_session(login, 1000);
            assert_eq!(session.principal, kind);
            assert_eq!(d.session(&cookie, "acme", 1001).unwrap().principal, kind);
        }
        // A grant sealed without the kind (as before it was carried) does not open: its
        // name alone cannot say whether the user or the client of that name logged in.
        let bare = json_grant(r#"{"k":"session","u":"twin","o":"acme","e":9999,"n":"x"}"#);
        assert_eq!(
            d.session(&d.seal_raw(&bare), "acme", 1001),
            Err(Refusal::Forged)
        );
    }

    fn json_grant(json: &str) -> String {
        B64.encode(json)
    }

    impl Dashboard {
        /// Seals a payload as `seal` does, whatever it holds.
        fn seal_raw(&self, payload: &str) -> String {
            let mac = B64.encode(self.mac(payload.as_bytes()));
            format!("{payload}.{mac}")
        }
    }

    #[test]
    fn the_csrf_token_belongs_to_one_session() {
        let d = Dashboard::new([7; 32]);
        let (_, a) = session_for(&d, "alice", 0);
        let (_, b) = session_for(&d, "alice", 0);
        assert_eq!(d.csrf(&a), d.csrf(&a));
        assert_ne!(d.csrf(&a), d.csrf(&b));
    }
}
