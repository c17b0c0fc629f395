//! The command channel's keys (zmq.md §1.3–1.4): the server's CurveZMQ key pair (new at
//! every start, as in the original), the allow-list of client Curve keys announced
//! through `ccpk`, and each node's HMAC session key. HTTP fills them in; the ZeroMQ
//! sockets (ROUTER, PUB, ZAP) consult them from their own thread.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pushy_protocol::job::OrgGuid;

/// How long a `ccpk` stays on the allow-list (zmq.md §1.4, 60 s in the original).
pub const CCPK_TTL: Duration = Duration::from_secs(60);

/// The server's CurveZMQ identity.
#[derive(Clone)]
pub struct CurveIdentity {
    /// Public key, Z85 (40 characters): the config's `curve_public_key`.
    pub public_z85: String,
    /// Secret key, raw.
    secret: [u8; 32],
}

impl std::fmt::Debug for CurveIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CurveIdentity")
            .field("public_z85", &self.public_z85)
            .finish_non_exhaustive()
    }
}

impl CurveIdentity {
    /// A new key pair from libzmq (fails only if libzmq was built without CURVE).
    ///
    /// # Errors
    /// When libzmq cannot make Curve keys.
    pub fn generate() -> Result<Self, zmq::Error> {
        let pair = zmq::CurveKeyPair::new()?;
        let public_z85 = zmq::z85_encode(&pair.public_key).map_err(|_| zmq::Error::EINVAL)?;
        Ok(CurveIdentity {
            public_z85,
            secret: pair.secret_key,
        })
    }

    /// The raw secret key, for the ROUTER socket.
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }
}

/// The Z85 alphabet (ZeroMQ RFC 32), in digit order.
const Z85_ALPHABET: &[u8; 85] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// Decodes a `ccpk`: exactly 40 Z85 characters whose every five-character group fits in
/// 32 bits, i.e. the canonical encoding of a 32-byte Curve public key. Anything else is
/// refused here rather than handed to libzmq, whose decoder accepts some characters
/// outside the alphabet and wraps overflowing groups into a key nobody holds.
pub fn decode_ccpk(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 40 {
        return None;
    }
    let mut key = [0u8; 32];
    for (group, out) in bytes.chunks_exact(5).zip(key.chunks_exact_mut(4)) {
        let mut value: u64 = 0;
        for c in group {
            let digit = Z85_ALPHABET.iter().position(|a| a == c)?;
            value = value * 85 + digit as u64;
        }
        out.copy_from_slice(&u32::try_from(value).ok()?.to_be_bytes());
    }
    Some(key)
}

/// Client Curve keys allowed to connect, each until its deadline.
#[derive(Clone, Debug, Default)]
pub struct ClientKeys {
    inner: Arc<Mutex<AllowList>>,
}

#[derive(Debug, Default)]
struct AllowList {
    keys: HashMap<[u8; 32], Instant>,
    /// When expired keys are next swept out. Sweeping on every `allow` made a fetch storm
    /// quadratic (and held the lock ZAP needs); expiry itself is checked in `is_allowed`.
    next_sweep: Option<Instant>,
}

impl ClientKeys {
    /// Allows `key` for `ttl` from `now` (at least [`CCPK_TTL`]); expired entries are
    /// swept out at most once per [`CCPK_TTL`]. The config endpoint passes the config
    /// `lifetime`, so a client whose connection libzmq re-establishes is still admitted for
    /// as long as its config is valid (fixes the original's 60-second ZAP livelock, zmq.md §1.4).
    pub fn allow(&self, key: [u8; 32], now: Instant, ttl: Duration) {
        let mut list = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if list.next_sweep.is_none_or(|at| at <= now) {
            list.keys.retain(|_, until| *until > now);
            list.next_sweep = Some(now + CCPK_TTL);
        }
        list.keys.insert(key, now + ttl.max(CCPK_TTL));
    }

    /// Whether `key` may connect at `now`.
    pub fn is_allowed(&self, key: &[u8; 32], now: Instant) -> bool {
        let list = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        list.keys.get(key).is_some_and(|until| *until > now)
    }
}

/// One random HMAC-SHA256 key per node, made on its first config request and kept for
/// the process lifetime (http.md §1.4.1). Nodes name their organization in messages, so
/// keys are found by org name too; the config request is where the name and the GUID
/// meet.
#[derive(Clone, Debug, Default)]
pub struct SessionKeys {
    inner: Arc<Mutex<SessionKeyMaps>>,
}

#[derive(Debug, Default)]
struct SessionKeyMaps {
    by_guid: HashMap<(OrgGuid, String), [u8; 32]>,
    guid_of_org: HashMap<String, OrgGuid>,
    /// In a cluster: keys are derived from this secret, so every instance (which all
    /// share the server key it comes from) gives a node the same key.
    derive_from: Option<[u8; 32]>,
}

impl SessionKeys {
    /// Keys derived from `secret` (HMAC-SHA256 of the org GUID and node name) instead of
    /// random ones: what every instance of a cluster uses, with a secret derived from
    /// the server key they share.
    pub fn derived(secret: [u8; 32]) -> SessionKeys {
        let keys = SessionKeys::default();
        keys.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .derive_from = Some(secret);
        keys
    }

    /// The node's session key, created if it has none; remembers `org_name`'s GUID.
    pub fn get_or_create(&self, org_name: &str, org: &OrgGuid, node: &str) -> [u8; 32] {
        let mut maps = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        maps.guid_of_org.insert(org_name.to_owned(), org.clone());
        let derive_from = maps.derive_from;
        *maps
            .by_guid
            .entry((org.clone(), node.to_owned()))
            .or_insert_with(|| match derive_from {
                Some(secret) => derive(&secret, org, node),
                None => {
                    let mut k = [0u8; 32];
                    openssl::rand::rand_bytes(&mut k).expect("OpenSSL random bytes");
                    k
                }
            })
    }

    /// The node's session key, if it has fetched its config.
    pub fn get(&self, org: &OrgGuid, node: &str) -> Option<[u8; 32]> {
        let maps = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        maps.by_guid.get(&(org.clone(), node.to_owned())).copied()
    }

    /// The GUID and session key of a node named by org name, as messages name it.
    pub fn lookup(&self, org_name: &str, node: &str) -> Option<(OrgGuid, [u8; 32])> {
        let maps = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let guid = maps.guid_of_org.get(org_name)?;
        let key = maps.by_guid.get(&(guid.clone(), node.to_owned()))?;
        Some((guid.clone(), *key))
    }
}

/// HMAC-SHA256(secret, org GUID, NUL, node name).
fn derive(secret: &[u8; 32], org: &OrgGuid, node: &str) -> [u8; 32] {
    let key = openssl::pkey::PKey::hmac(secret).expect("HMAC key");
    let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &key)
        .expect("HMAC-SHA256");
    signer.update(org.as_str().as_bytes()).expect("HMAC update");
    signer.update(&[0]).expect("HMAC update");
    signer.update(node.as_bytes()).expect("HMAC update");
    let mut out = [0u8; 32];
    out.copy_from_slice(&signer.sign_to_vec().expect("HMAC sign"));
    out
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn derived_session_keys_agree_between_instances_and_differ_between_nodes() {
        let org = OrgGuid("0123456789abcdef0123456789abcdef".into());
        let a = SessionKeys::derived([9; 32]);
        let b = SessionKeys::derived([9; 32]);
        assert_eq!(
            a.get_or_create("o", &org, "n1"),
            b.get_or_create("o", &org, "n1")
        );
        assert_ne!(
            a.get_or_create("o", &org, "n1"),
            a.get_or_create("o", &org, "n2")
        );
        let other = SessionKeys::derived([8; 32]);
        assert_ne!(
            a.get_or_create("o", &org, "n1"),
            other.get_or_create("o", &org, "n1")
        );
    }

    #[test]
    fn curve_keys_come_from_libzmq_with_curve() {
        let id = CurveIdentity::generate().expect("libzmq with CURVE");
        assert_eq!(id.public_z85.len(), 40);
        assert!(decode_ccpk(&id.public_z85).is_some());
    }

    #[test]
    fn ccpk_validation() {
        assert!(decode_ccpk("1234567890123456789012345678901234567890").is_some());
        assert!(decode_ccpk("123").is_none());
        assert!(decode_ccpk("1234567890123456789012345678901234567 \"").is_none());
    }

    #[test]
    fn ccpk_decodes_as_libzmq_does_for_every_canonical_key() {
        for _ in 0..64 {
            let pair = zmq::CurveKeyPair::new().unwrap();
            let text = zmq::z85_encode(&pair.public_key).unwrap();
            assert_eq!(decode_ccpk(&text), Some(pair.public_key));
        }
        let all_ones = zmq::z85_encode(&[0xff; 32]).unwrap();
        assert_eq!(decode_ccpk(&all_ones), Some([0xff; 32]));
    }

    #[test]
    fn ccpk_outside_the_alphabet_or_overflowing_is_refused() {
        // Characters libzmq's table does not hold, in every position of a group.
        for bad in ['~', ' ', '"', ',', ';', '\\', '_', '`', '|', '\'', '\u{7f}'] {
            for at in 0..5 {
                let mut text: Vec<char> =
                    "1234567890123456789012345678901234567890".chars().collect();
                text[at] = bad;
                let text: String = text.into_iter().collect();
                assert_eq!(decode_ccpk(&text), None, "{text:?}");
            }
        }
        // 40 bytes but not 40 ASCII characters.
        assert_eq!(
            decode_ccpk("é234567890123456789012345678901234567890"),
            None
        );
        // "#####" is 85^5 - 1, past 32 bits.
        assert_eq!(
            decode_ccpk("#####67890123456789012345678901234567890"),
            None
        );
        assert_eq!(decode_ccpk("%nSc1"), None);
    }

    #[test]
    fn fixes_zap_livelock_keys_last_the_config_lifetime() {
        let keys = ClientKeys::default();
        let t0 = Instant::now();
        keys.allow([7; 32], t0, Duration::from_secs(3600));
        assert!(
            keys.is_allowed(&[7; 32], t0 + Duration::from_secs(61)),
            "a reconnect after 60 s is still admitted"
        );
        assert!(!keys.is_allowed(&[7; 32], t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn allow_list_expires() {
        let keys = ClientKeys::default();
        let t0 = Instant::now();
        keys.allow([7; 32], t0, Duration::ZERO);
        assert!(keys.is_allowed(&[7; 32], t0 + Duration::from_secs(59)));
        assert!(!keys.is_allowed(&[7; 32], t0 + CCPK_TTL));
        assert!(!keys.is_allowed(&[8; 32], t0));
    }
}
