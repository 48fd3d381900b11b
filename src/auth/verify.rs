//! Key loading and token verification.
//!
//! A [`Verifier`] is built once from configuration and shared by every core
//! (it is `Send + Sync + Clone`). Verification is deliberately explicit rather
//! than delegated wholesale to `jsonwebtoken::decode`:
//!
//! 1. size cap, then the compact form is split and each segment is decoded
//!    strictly (base64url without padding, JSON objects), so junk is
//!    `Malformed` whatever its signature;
//! 2. the header's `alg` is checked against an allow-list of exactly the
//!    algorithms that have a configured key (`HS256`, `RS256`, `ES256`). `none`,
//!    unknown names and algorithm confusion (an `HS256` token "signed" with an
//!    RSA public key's PEM) fail here, before any key is touched, and each key is
//!    only ever tried with its own algorithm;
//! 3. the signature is checked with `jsonwebtoken::crypto::verify` against each
//!    key of that algorithm (several keys allow rotation);
//! 4. claims are checked here (`sub`, `exp`, `nbf`, `aud`, `iss`, `app`) so that
//!    each rule maps to one [`AuthError`] and unset options really mean "not
//!    checked".

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use super::claims::validate_subject;
use super::{AuthError, Claims};

/// Tokens longer than this are refused as [`AuthError::Malformed`] unparsed.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Smallest RSA modulus accepted for RS256 keys.
const MIN_RSA_BITS: usize = 2048;

/// Where keys come from (one verifier may hold several, e.g. during key rotation).
pub enum KeySource {
    /// Shared secret for HS256 (raw bytes, not base64).
    Hs256Secret(Vec<u8>),
    /// RSA public key for RS256: PEM, `BEGIN PUBLIC KEY` (SPKI) or `BEGIN RSA PUBLIC KEY` (PKCS#1).
    Rs256PublicPem(Vec<u8>),
    /// P-256 public key for ES256: PEM, `BEGIN PUBLIC KEY` (SPKI).
    Es256PublicPem(Vec<u8>),
}

impl fmt::Debug for KeySource {
    /// Never prints key bytes (secrets end up in logs otherwise).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, len) = match self {
            KeySource::Hs256Secret(b) => ("Hs256Secret", b.len()),
            KeySource::Rs256PublicPem(b) => ("Rs256PublicPem", b.len()),
            KeySource::Es256PublicPem(b) => ("Es256PublicPem", b.len()),
        };
        write!(f, "{name}(<{len} bytes redacted>)")
    }
}

/// What to check besides the signature.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// When set, the token's `aud` (string or array) must contain this value.
    pub audience: Option<String>,
    /// When set, the token's `iss` must equal this value.
    pub issuer: Option<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// When true, tokens without `exp` are refused ([`AuthError::MissingExpiry`]).
    pub require_exp: bool,
}

/// The algorithms ringcast accepts. Everything else, `none` included, is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Hs256,
    Rs256,
    Es256,
}

impl Alg {
    /// Exact, case-sensitive match on the JOSE name.
    fn from_name(name: &str) -> Option<Alg> {
        match name {
            "HS256" => Some(Alg::Hs256),
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
        }
    }

    fn jwt(self) -> Algorithm {
        match self {
            Alg::Hs256 => Algorithm::HS256,
            Alg::Rs256 => Algorithm::RS256,
            Alg::Es256 => Algorithm::ES256,
        }
    }
}

/// A decoding key bound to the single algorithm it may verify.
#[derive(Clone)]
struct LoadedKey {
    alg: Alg,
    key: DecodingKey,
}

/// Verifies tokens against a fixed set of keys and options.
#[derive(Clone)]
pub struct Verifier {
    keys: Vec<LoadedKey>,
    opts: VerifyOptions,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let algs: Vec<&str> = self.keys.iter().map(|k| k.alg.name()).collect();
        f.debug_struct("Verifier")
            .field("keys", &algs)
            .field("opts", &self.opts)
            .finish()
    }
}

fn bad_key(index: usize, alg: Alg, why: &str) -> AuthError {
    AuthError::BadKey(format!("key #{} ({}): {}", index + 1, alg.name(), why))
}

/// Checks the PEM envelope before parsing so the common mistakes get a clear
/// message (private key configured instead of public, not PEM at all).
fn check_public_pem(index: usize, alg: Alg, pem: &[u8]) -> Result<(), AuthError> {
    let text = std::str::from_utf8(pem).map_err(|_| bad_key(index, alg, "PEM is not UTF-8"))?;
    if !text.contains("-----BEGIN ") {
        return Err(bad_key(index, alg, "not PEM (no -----BEGIN line)"));
    }
    if text.contains("PRIVATE KEY-----") {
        return Err(bad_key(
            index,
            alg,
            "a private key was given; configure the public key (-----BEGIN PUBLIC KEY-----)",
        ));
    }
    Ok(())
}

fn load_key(index: usize, source: KeySource) -> Result<LoadedKey, AuthError> {
    match source {
        KeySource::Hs256Secret(secret) => {
            if secret.is_empty() {
                return Err(bad_key(index, Alg::Hs256, "secret is empty"));
            }
            Ok(LoadedKey {
                alg: Alg::Hs256,
                key: DecodingKey::from_secret(&secret),
            })
        }
        KeySource::Rs256PublicPem(pem) => {
            let alg = Alg::Rs256;
            check_public_pem(index, alg, &pem)?;
            let key = DecodingKey::from_rsa_pem(&pem)
                .map_err(|_| bad_key(index, alg, "not an RSA public key PEM"))?;
            let der = key
                .try_get_as_bytes()
                .map_err(|_| bad_key(index, alg, "not an RSA public key PEM"))?;
            let rsa_pub_components = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER
                .key_utils
                .rsa_pub_components_from_public_key;
            let (n, _e) = rsa_pub_components(der)
                .map_err(|_| bad_key(index, alg, "RSA public key could not be parsed"))?;
            let bits = modulus_bits(&n);
            if bits < MIN_RSA_BITS {
                return Err(bad_key(
                    index,
                    alg,
                    &format!("RSA key has {bits} bits; at least {MIN_RSA_BITS} are required"),
                ));
            }
            Ok(LoadedKey { alg, key })
        }
        KeySource::Es256PublicPem(pem) => {
            let alg = Alg::Es256;
            check_public_pem(index, alg, &pem)?;
            let key = DecodingKey::from_ec_pem(&pem)
                .map_err(|_| bad_key(index, alg, "not an EC public key PEM"))?;
            // Building a verifier parses the point; a key on another curve (e.g.
            // P-384) or an invalid point fails here rather than on every token.
            jsonwebtoken::crypto::verify("", b"", &key, Algorithm::ES256)
                .map_err(|_| bad_key(index, alg, "not a valid P-256 public key"))?;
            Ok(LoadedKey { alg, key })
        }
    }
}

/// Bit length of a big-endian unsigned integer.
fn modulus_bits(n: &[u8]) -> usize {
    let n = match n.iter().position(|&b| b != 0) {
        Some(i) => &n[i..],
        None => return 0,
    };
    n.len() * 8 - n[0].leading_zeros() as usize
}

/// Strict base64url (no padding, canonical trailing bits).
fn b64(segment: &str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthError::Malformed)
}

fn json_object(segment: &str) -> Result<Map<String, Value>, AuthError> {
    match serde_json::from_slice(&b64(segment)?) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(AuthError::Malformed),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Verifier {
    /// Loads every key; any bad one (empty secret, unparsable or private PEM,
    /// weak RSA key, wrong curve) fails the whole construction with a
    /// [`AuthError::BadKey`] that names the key by position and algorithm.
    pub fn new(keys: Vec<KeySource>, opts: VerifyOptions) -> Result<Verifier, AuthError> {
        if keys.is_empty() {
            return Err(AuthError::BadKey(
                "no verification keys configured".to_string(),
            ));
        }
        let keys = keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| load_key(i, k))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Verifier { keys, opts })
    }

    /// Verify signature, exp, nbf (with leeway), aud/iss when configured;
    /// `app`: when `Some(name)` and the token carries an `app` claim that
    /// differs → [`AuthError::WrongApp`] (a token without an `app` claim is
    /// accepted for any app).
    pub fn verify(&self, token: &str, app: Option<&str>) -> Result<Claims, AuthError> {
        self.verify_at(token, app, unix_now())
    }

    /// [`Verifier::verify`] with an explicit current time (seconds since the
    /// Unix epoch), for deterministic tests.
    pub fn verify_at(&self, token: &str, app: Option<&str>, now: u64) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        let mut parts = token.split('.');
        let (h, p, s) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(h), Some(p), Some(s), None) if !h.is_empty() && !p.is_empty() => (h, p, s),
            _ => return Err(AuthError::Malformed),
        };

        let header = json_object(h)?;
        // RFC 7515 §4.1.11: extensions listed in `crit` must be understood; we
        // understand none, so such tokens are refused.
        if header.contains_key("crit") {
            return Err(AuthError::Malformed);
        }
        let alg = match header.get("alg") {
            Some(Value::String(name)) => name,
            _ => return Err(AuthError::Malformed),
        };
        let alg = Alg::from_name(alg).ok_or(AuthError::AlgorithmNotAllowed)?;
        if !self.keys.iter().any(|k| k.alg == alg) {
            return Err(AuthError::AlgorithmNotAllowed);
        }

        let payload = json_object(p)?;
        if b64(s)?.is_empty() {
            return Err(AuthError::BadSignature);
        }

        let signed = &token.as_bytes()[..h.len() + 1 + p.len()];
        let verified =
            self.keys.iter().filter(|k| k.alg == alg).any(|k| {
                jsonwebtoken::crypto::verify(s, signed, &k.key, alg.jwt()).unwrap_or(false)
            });
        if !verified {
            return Err(AuthError::BadSignature);
        }

        self.check_claims(payload, app, now)
    }

    fn check_claims(
        &self,
        payload: Map<String, Value>,
        app: Option<&str>,
        now: u64,
    ) -> Result<Claims, AuthError> {
        match payload.get("sub") {
            Some(Value::String(sub)) => validate_subject(sub)?,
            _ => return Err(AuthError::InvalidSubject),
        }
        let claims: Claims =
            serde_json::from_value(Value::Object(payload)).map_err(|_| AuthError::Malformed)?;

        let leeway = self.opts.leeway_secs;
        match claims.exp {
            // RFC 7519 §4.1.4: valid only while now < exp.
            Some(exp) if now >= exp.saturating_add(leeway) => return Err(AuthError::Expired),
            None if self.opts.require_exp => return Err(AuthError::MissingExpiry),
            _ => {}
        }
        // RFC 7519 §4.1.5: valid from nbf on.
        if let Some(nbf) = claims.nbf {
            if now.saturating_add(leeway) < nbf {
                return Err(AuthError::NotYetValid);
            }
        }
        if let Some(aud) = &self.opts.audience {
            if !claims.audience_contains(aud) {
                return Err(AuthError::WrongAudience);
            }
        }
        if let Some(iss) = &self.opts.issuer {
            if claims.iss.as_deref() != Some(iss.as_str()) {
                return Err(AuthError::WrongIssuer);
            }
        }
        if let (Some(want), Some(got)) = (app, claims.app.as_deref()) {
            if want != got {
                return Err(AuthError::WrongApp);
            }
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::super::mint_hs256;
    use super::super::test_keys::*;
    use super::*;
    use jsonwebtoken::EncodingKey;
    use serde_json::json;
    use std::time::Duration;

    const NOW: u64 = 1_800_000_000;
    const SECRET: &[u8] = b"test-secret-0123456789abcdef0123";

    fn enc(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    /// Builds `header.payload.signature`, signing with `key` as `alg`, whatever
    /// the header claims, so tests can forge any header.
    fn forge(header: Value, payload: Value, key: &EncodingKey, alg: Algorithm) -> String {
        let msg = format!("{}.{}", enc(&header), enc(&payload));
        let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), key, alg).unwrap();
        format!("{msg}.{sig}")
    }

    fn hs_token(payload: Value) -> String {
        forge(
            json!({"alg": "HS256", "typ": "JWT"}),
            payload,
            &EncodingKey::from_secret(SECRET),
            Algorithm::HS256,
        )
    }

    fn rs_token(payload: Value) -> String {
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).unwrap();
        forge(json!({"alg": "RS256"}), payload, &key, Algorithm::RS256)
    }

    fn es_token(payload: Value) -> String {
        let key = EncodingKey::from_ec_pem(EC_PRIVATE_PEM.as_bytes()).unwrap();
        forge(json!({"alg": "ES256"}), payload, &key, Algorithm::ES256)
    }

    fn hs_verifier(opts: VerifyOptions) -> Verifier {
        Verifier::new(vec![KeySource::Hs256Secret(SECRET.to_vec())], opts).unwrap()
    }

    fn rs_key() -> KeySource {
        KeySource::Rs256PublicPem(RSA_PUBLIC_PEM.as_bytes().to_vec())
    }

    fn es_key() -> KeySource {
        KeySource::Es256PublicPem(EC_PUBLIC_PEM.as_bytes().to_vec())
    }

    fn all_verifier() -> Verifier {
        Verifier::new(
            vec![KeySource::Hs256Secret(SECRET.to_vec()), rs_key(), es_key()],
            VerifyOptions::default(),
        )
        .unwrap()
    }

    fn good() -> Value {
        json!({"sub": "u1", "exp": NOW + 60})
    }

    #[test]
    fn valid_hs256_rs256_es256() {
        let v = all_verifier();
        for token in [hs_token(good()), rs_token(good()), es_token(good())] {
            let c = v.verify_at(&token, None, NOW).unwrap();
            assert_eq!(c.sub, "u1");
            assert_eq!(c.user_type, "user");
            assert_eq!(c.exp, Some(NOW + 60));
        }
        let c = v
            .verify_at(
                &rs_token(
                    json!({"sub": "svc", "user_type": "service", "roles": ["pub"],
                                 "topics": ["t:*"], "tenant": 7}),
                ),
                Some("app1"),
                NOW,
            )
            .unwrap();
        assert_eq!(c.user_type, "service");
        assert!(c.has_role("pub") && c.allows_topic("t:x"));
        assert_eq!(c.extra.get("tenant"), Some(&json!(7)));
    }

    #[test]
    fn verify_uses_the_real_clock() {
        let v = hs_verifier(VerifyOptions::default());
        let t = mint_hs256(
            SECRET,
            "u1",
            "user",
            &[],
            &[],
            None,
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(v.verify(&t, None).unwrap().sub, "u1");
    }

    #[test]
    fn alg_none_is_refused() {
        let v = all_verifier();
        let hs = EncodingKey::from_secret(SECRET);
        for name in ["none", "None", "NONE", "nOnE", ""] {
            let body = format!("{}.{}", enc(&json!({"alg": name})), enc(&good()));
            for sig in [String::new(), "AAAA".to_string()] {
                let t = format!("{body}.{sig}");
                assert_eq!(
                    v.verify_at(&t, None, NOW),
                    Err(AuthError::AlgorithmNotAllowed),
                    "{t}"
                );
            }
            // Even with a genuine HMAC over the body.
            let t = forge(json!({"alg": name}), good(), &hs, Algorithm::HS256);
            assert_eq!(
                v.verify_at(&t, None, NOW),
                Err(AuthError::AlgorithmNotAllowed)
            );
        }
        // No dot-terminated third segment at all.
        let t = format!("{}.{}", enc(&json!({"alg": "none"})), enc(&good()));
        assert_eq!(v.verify_at(&t, None, NOW), Err(AuthError::Malformed));
    }

    #[test]
    fn unknown_and_lowercase_algorithms_refused() {
        let v = all_verifier();
        let hs = EncodingKey::from_secret(SECRET);
        for (name, alg) in [
            ("HS384", Algorithm::HS384),
            ("HS512", Algorithm::HS512),
            ("hs256", Algorithm::HS256),
        ] {
            let t = forge(json!({"alg": name}), good(), &hs, alg);
            assert_eq!(
                v.verify_at(&t, None, NOW),
                Err(AuthError::AlgorithmNotAllowed)
            );
        }
        let t = forge(json!({"alg": 256}), good(), &hs, Algorithm::HS256);
        assert_eq!(v.verify_at(&t, None, NOW), Err(AuthError::Malformed));
        let t = forge(json!({"typ": "JWT"}), good(), &hs, Algorithm::HS256);
        assert_eq!(v.verify_at(&t, None, NOW), Err(AuthError::Malformed));
    }

    #[test]
    fn algorithm_confusion_hs256_with_rsa_public_pem() {
        // The classic attack: HMAC keyed with the server's public key PEM.
        let pem_as_secret = EncodingKey::from_secret(RSA_PUBLIC_PEM.as_bytes());
        let t = forge(
            json!({"alg": "HS256"}),
            good(),
            &pem_as_secret,
            Algorithm::HS256,
        );

        let rs_only = Verifier::new(vec![rs_key()], VerifyOptions::default()).unwrap();
        assert_eq!(
            rs_only.verify_at(&t, None, NOW),
            Err(AuthError::AlgorithmNotAllowed)
        );

        // Same with the EC public key.
        let es_only = Verifier::new(vec![es_key()], VerifyOptions::default()).unwrap();
        let pem_as_secret = EncodingKey::from_secret(EC_PUBLIC_PEM.as_bytes());
        let t2 = forge(
            json!({"alg": "HS256"}),
            good(),
            &pem_as_secret,
            Algorithm::HS256,
        );
        assert_eq!(
            es_only.verify_at(&t2, None, NOW),
            Err(AuthError::AlgorithmNotAllowed)
        );

        // With an HS secret also configured, the RSA key is still never used as
        // an HMAC key: the token fails against the real secret.
        assert_eq!(
            all_verifier().verify_at(&t, None, NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn keys_only_verify_their_own_family() {
        let hs_only = hs_verifier(VerifyOptions::default());
        let rs_only = Verifier::new(vec![rs_key()], VerifyOptions::default()).unwrap();
        let es_only = Verifier::new(vec![es_key()], VerifyOptions::default()).unwrap();
        let (hs, rs, es) = (hs_token(good()), rs_token(good()), es_token(good()));
        let refused = Err(AuthError::AlgorithmNotAllowed);
        assert_eq!(hs_only.verify_at(&rs, None, NOW), refused);
        assert_eq!(hs_only.verify_at(&es, None, NOW), refused);
        assert_eq!(rs_only.verify_at(&hs, None, NOW), refused);
        assert_eq!(rs_only.verify_at(&es, None, NOW), refused);
        assert_eq!(es_only.verify_at(&hs, None, NOW), refused);
        assert_eq!(es_only.verify_at(&rs, None, NOW), refused);
        // An ES256 signature relabelled as RS256 (and vice versa) fails the signature.
        let relabel = |t: &str, alg: &str| {
            let mut it = t.split('.');
            let (_, p, s) = (it.next(), it.next().unwrap(), it.next().unwrap());
            format!("{}.{p}.{s}", enc(&json!({ "alg": alg })))
        };
        let v = all_verifier();
        assert_eq!(
            v.verify_at(&relabel(&es, "RS256"), None, NOW),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            v.verify_at(&relabel(&rs, "ES256"), None, NOW),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            v.verify_at(&relabel(&rs, "HS256"), None, NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn wrong_signature() {
        let v = all_verifier();
        let other = EncodingKey::from_secret(b"another-secret");
        let t = forge(json!({"alg": "HS256"}), good(), &other, Algorithm::HS256);
        assert_eq!(v.verify_at(&t, None, NOW), Err(AuthError::BadSignature));

        // Payload swapped under a valid signature.
        for t in [hs_token(good()), rs_token(good()), es_token(good())] {
            let mut it = t.split('.');
            let (h, _, s) = (it.next().unwrap(), it.next(), it.next().unwrap());
            let evil = enc(&json!({"sub": "admin", "exp": NOW + 60}));
            let forged = format!("{h}.{evil}.{s}");
            assert_eq!(
                v.verify_at(&forged, None, NOW),
                Err(AuthError::BadSignature)
            );
            // Signature stripped.
            let stripped = format!("{h}.{}.", t.split('.').nth(1).unwrap());
            assert_eq!(
                v.verify_at(&stripped, None, NOW),
                Err(AuthError::BadSignature)
            );
        }
    }

    #[test]
    fn expiry_and_not_before_with_leeway() {
        let strict = hs_verifier(VerifyOptions::default());
        let lenient = hs_verifier(VerifyOptions {
            leeway_secs: 30,
            ..Default::default()
        });
        let expired = hs_token(json!({"sub": "u", "exp": NOW - 10}));
        assert_eq!(
            strict.verify_at(&expired, None, NOW),
            Err(AuthError::Expired)
        );
        assert!(lenient.verify_at(&expired, None, NOW).is_ok());
        let long_expired = hs_token(json!({"sub": "u", "exp": NOW - 31}));
        assert_eq!(
            lenient.verify_at(&long_expired, None, NOW),
            Err(AuthError::Expired)
        );
        let at_exp = hs_token(json!({"sub": "u", "exp": NOW}));
        assert_eq!(
            strict.verify_at(&at_exp, None, NOW),
            Err(AuthError::Expired)
        );

        let future = hs_token(json!({"sub": "u", "nbf": NOW + 10, "exp": NOW + 100}));
        assert_eq!(
            strict.verify_at(&future, None, NOW),
            Err(AuthError::NotYetValid)
        );
        assert!(lenient.verify_at(&future, None, NOW).is_ok());
        let far_future = hs_token(json!({"sub": "u", "nbf": NOW + 31}));
        assert_eq!(
            lenient.verify_at(&far_future, None, NOW),
            Err(AuthError::NotYetValid)
        );
        let at_nbf = hs_token(json!({"sub": "u", "nbf": NOW}));
        assert!(strict.verify_at(&at_nbf, None, NOW).is_ok());

        // Huge values do not overflow.
        let max = hs_token(json!({"sub": "u", "exp": u64::MAX, "nbf": 0}));
        assert!(lenient.verify_at(&max, None, u64::MAX - 1).is_ok());
    }

    #[test]
    fn require_exp() {
        let no_exp = hs_token(json!({"sub": "u"}));
        assert!(hs_verifier(VerifyOptions::default())
            .verify_at(&no_exp, None, NOW)
            .is_ok());
        let v = hs_verifier(VerifyOptions {
            require_exp: true,
            ..Default::default()
        });
        assert_eq!(
            v.verify_at(&no_exp, None, NOW),
            Err(AuthError::MissingExpiry)
        );
        assert!(v.verify_at(&hs_token(good()), None, NOW).is_ok());
    }

    #[test]
    fn audience() {
        let v = hs_verifier(VerifyOptions {
            audience: Some("ringcast".into()),
            ..Default::default()
        });
        let ok = |aud: Value| v.verify_at(&hs_token(json!({"sub": "u", "aud": aud})), None, NOW);
        assert!(ok(json!("ringcast")).is_ok());
        assert!(ok(json!(["other", "ringcast"])).is_ok());
        assert_eq!(ok(json!("other")), Err(AuthError::WrongAudience));
        assert_eq!(ok(json!(["other"])), Err(AuthError::WrongAudience));
        assert_eq!(ok(json!(1)), Err(AuthError::WrongAudience));
        let missing = hs_token(json!({"sub": "u"}));
        assert_eq!(
            v.verify_at(&missing, None, NOW),
            Err(AuthError::WrongAudience)
        );
        // Not configured: any aud passes.
        let anyv = hs_verifier(VerifyOptions::default());
        let t = hs_token(json!({"sub": "u", "aud": "whatever"}));
        assert!(anyv.verify_at(&t, None, NOW).is_ok());
    }

    #[test]
    fn issuer() {
        let v = hs_verifier(VerifyOptions {
            issuer: Some("https://idp.example".into()),
            ..Default::default()
        });
        let t = hs_token(json!({"sub": "u", "iss": "https://idp.example"}));
        assert!(v.verify_at(&t, None, NOW).is_ok());
        let wrong = hs_token(json!({"sub": "u", "iss": "https://evil.example"}));
        assert_eq!(v.verify_at(&wrong, None, NOW), Err(AuthError::WrongIssuer));
        let missing = hs_token(json!({"sub": "u"}));
        assert_eq!(
            v.verify_at(&missing, None, NOW),
            Err(AuthError::WrongIssuer)
        );
    }

    #[test]
    fn app_binding() {
        let v = hs_verifier(VerifyOptions::default());
        let bound = hs_token(json!({"sub": "u", "app": "chat"}));
        assert!(v.verify_at(&bound, Some("chat"), NOW).is_ok());
        assert!(v.verify_at(&bound, None, NOW).is_ok());
        assert_eq!(
            v.verify_at(&bound, Some("game"), NOW),
            Err(AuthError::WrongApp)
        );
        let unbound = hs_token(json!({"sub": "u"}));
        assert!(v.verify_at(&unbound, Some("game"), NOW).is_ok());
    }

    #[test]
    fn malformed_tokens() {
        let v = all_verifier();
        let good_t = hs_token(good());
        let (h, rest) = good_t.split_once('.').unwrap();
        let (p, s) = rest.split_once('.').unwrap();
        let hs = EncodingKey::from_secret(SECRET);
        let signed_raw = |header: &str, payload: &str| {
            let msg = format!("{header}.{payload}");
            let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), &hs, Algorithm::HS256).unwrap();
            format!("{msg}.{sig}")
        };
        let cases = vec![
            String::new(),
            "abc".into(),
            format!("{h}.{p}"),
            format!("{h}.{p}.{s}.{s}"),
            format!(".{p}.{s}"),
            format!("{h}..{s}"),
            format!("!!!.{p}.{s}"),
            format!("{h}=.{p}.{s}"),
            format!("{h}.{p}.{s}!"),
            format!("{}.{p}.{s}", URL_SAFE_NO_PAD.encode(b"not json")),
            format!("{}.{p}.{s}", enc(&json!(["alg", "HS256"]))),
            // Correctly signed, but payload is not base64 / not JSON / not an object.
            signed_raw(h, "*&^"),
            signed_raw(h, &URL_SAFE_NO_PAD.encode(b"{\"sub\":")),
            signed_raw(h, &enc(&json!("u1"))),
            // Correctly signed, claims of the wrong type.
            hs_token(json!({"sub": "u", "exp": "tomorrow"})),
            hs_token(json!({"sub": "u", "exp": -5})),
            hs_token(json!({"sub": "u", "roles": "admin"})),
            hs_token(json!({"sub": "u", "app": 3})),
            // Critical header extension we do not understand.
            forge(
                json!({"alg": "HS256", "crit": ["b64"], "b64": false}),
                good(),
                &hs,
                Algorithm::HS256,
            ),
        ];
        for t in cases {
            assert_eq!(
                v.verify_at(&t, None, NOW),
                Err(AuthError::Malformed),
                "{t:?}"
            );
        }
    }

    #[test]
    fn oversized_token_is_malformed() {
        let v = hs_verifier(VerifyOptions::default());
        let big = hs_token(json!({"sub": "u", "pad": "x".repeat(MAX_TOKEN_BYTES)}));
        assert!(big.len() > MAX_TOKEN_BYTES);
        assert_eq!(v.verify_at(&big, None, NOW), Err(AuthError::Malformed));
        let junk = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(v.verify_at(&junk, None, NOW), Err(AuthError::Malformed));
        // Just under the cap is fine.
        let base = hs_token(json!({"sub": "u", "pad": ""})).len();
        let fill = (MAX_TOKEN_BYTES - base) * 3 / 4;
        let near = hs_token(json!({"sub": "u", "pad": "x".repeat(fill)}));
        assert!(near.len() <= MAX_TOKEN_BYTES);
        assert!(v.verify_at(&near, None, NOW).is_ok());
    }

    #[test]
    fn missing_or_invalid_subject() {
        let v = all_verifier();
        for payload in [
            json!({"exp": NOW + 60}),
            json!({"sub": null}),
            json!({"sub": 42}),
            json!({"sub": ""}),
            json!({"sub": "a\u{0}b"}),
            json!({"sub": "line\nbreak"}),
            json!({"sub": "x".repeat(129)}),
        ] {
            for t in [hs_token(payload.clone()), es_token(payload.clone())] {
                assert_eq!(v.verify_at(&t, None, NOW), Err(AuthError::InvalidSubject));
            }
        }
        let t = hs_token(json!({"sub": "x".repeat(128)}));
        assert!(v.verify_at(&t, None, NOW).is_ok());
    }

    #[test]
    fn rotation_two_hs_secrets() {
        let old = b"old-secret".to_vec();
        let new = b"new-secret".to_vec();
        let v = Verifier::new(
            vec![
                KeySource::Hs256Secret(old.clone()),
                KeySource::Hs256Secret(new.clone()),
            ],
            VerifyOptions::default(),
        )
        .unwrap();
        let ttl = Duration::from_secs(60);
        for secret in [&old, &new] {
            let t = mint_hs256(secret, "u", "user", &[], &[], None, ttl).unwrap();
            assert_eq!(v.verify(&t, None).unwrap().sub, "u");
        }
        let t = mint_hs256(b"retired-secret", "u", "user", &[], &[], None, ttl).unwrap();
        assert_eq!(v.verify(&t, None), Err(AuthError::BadSignature));
    }

    #[test]
    fn rotation_mixed_families() {
        // An HS secret next to an RS key: each token is checked only by its own kind.
        let v = Verifier::new(
            vec![KeySource::Hs256Secret(SECRET.to_vec()), rs_key()],
            VerifyOptions::default(),
        )
        .unwrap();
        assert!(v.verify_at(&hs_token(good()), None, NOW).is_ok());
        assert!(v.verify_at(&rs_token(good()), None, NOW).is_ok());
        assert_eq!(
            v.verify_at(&es_token(good()), None, NOW),
            Err(AuthError::AlgorithmNotAllowed)
        );
    }

    fn bad_key_msg(k: KeySource) -> String {
        match Verifier::new(vec![k], VerifyOptions::default()) {
            Err(AuthError::BadKey(m)) => m,
            other => panic!("expected BadKey, got {other:?}"),
        }
    }

    #[test]
    fn bad_keys() {
        assert!(bad_key_msg(KeySource::Hs256Secret(vec![])).contains("empty"));
        assert!(matches!(
            Verifier::new(vec![], VerifyOptions::default()),
            Err(AuthError::BadKey(_))
        ));
        let m = bad_key_msg(KeySource::Rs256PublicPem(b"hello".to_vec()));
        assert!(m.contains("not PEM"), "{m}");
        let m = bad_key_msg(KeySource::Rs256PublicPem(vec![0xff, 0xfe]));
        assert!(m.contains("UTF-8"), "{m}");
        let garbage = b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".to_vec();
        assert!(bad_key_msg(KeySource::Rs256PublicPem(garbage.clone())).contains("RS256"));
        assert!(bad_key_msg(KeySource::Es256PublicPem(garbage)).contains("ES256"));
        // Private keys configured by mistake.
        let m = bad_key_msg(KeySource::Rs256PublicPem(
            RSA_PRIVATE_PEM.as_bytes().to_vec(),
        ));
        assert!(m.contains("private key"), "{m}");
        assert!(
            !m.contains("MII"),
            "message must not echo key material: {m}"
        );
        let m = bad_key_msg(KeySource::Es256PublicPem(
            EC_PRIVATE_PEM.as_bytes().to_vec(),
        ));
        assert!(m.contains("private key"), "{m}");
        // Wrong key type / curve.
        let m = bad_key_msg(KeySource::Rs256PublicPem(EC_PUBLIC_PEM.as_bytes().to_vec()));
        assert!(m.contains("RSA"), "{m}");
        let m = bad_key_msg(KeySource::Es256PublicPem(
            RSA_PUBLIC_PEM.as_bytes().to_vec(),
        ));
        assert!(m.contains("EC"), "{m}");
        let m = bad_key_msg(KeySource::Es256PublicPem(
            EC_P384_PUBLIC_PEM.as_bytes().to_vec(),
        ));
        assert!(m.contains("P-256"), "{m}");
        // The position of the bad key is reported.
        let err = Verifier::new(
            vec![
                KeySource::Hs256Secret(b"k".to_vec()),
                KeySource::Hs256Secret(vec![]),
            ],
            VerifyOptions::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("key #2"), "{err}");
        assert_eq!(err.message(), "server authentication is misconfigured");
    }

    #[test]
    fn modulus_bit_length() {
        assert_eq!(modulus_bits(&[]), 0);
        assert_eq!(modulus_bits(&[0, 0]), 0);
        assert_eq!(modulus_bits(&[0, 1]), 1);
        assert_eq!(modulus_bits(&[0x80, 0]), 16);
        assert_eq!(modulus_bits(&[0, 0x7f, 0]), 15);
    }

    #[test]
    fn debug_output_is_redacted() {
        let k = KeySource::Hs256Secret(b"super-secret".to_vec());
        let d = format!("{k:?}");
        assert!(!d.contains("super") && d.contains("12 bytes"), "{d}");
        let d = format!("{:?}", all_verifier());
        assert!(d.contains("HS256") && d.contains("RS256") && !d.contains("test-secret"));
    }

    #[test]
    fn verifier_is_shareable() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        assert_traits::<Verifier>();
    }
}
