//! JWT authentication for WebSocket upgrades.
//!
//! A client proves who it is with a JWT carried on the upgrade request
//! ([`token_from_request`]); a [`Verifier`] built once at start-up from the
//! configured keys checks it and yields [`Claims`] that the hub consults for
//! topic access ([`Claims::allows_topic`], [`Claims::has_role`]). The module is
//! split by concern so each piece can be tested on its own:
//!
//! - `claims`: the claim set ringcast understands and its topic/role checks;
//! - `error`: [`AuthError`], with operator-facing `Display` and a client-facing
//!   [`AuthError::message`] that never reveals key material;
//! - `verify`: key loading and token verification. `jsonwebtoken` is used only for
//!   the signature primitives: header parsing, the algorithm allow-list (the
//!   defence against `alg: none` and algorithm confusion) and claim checks are
//!   done here, so every rule is explicit and maps to exactly one error;
//! - `request`: pulling the token out of the query string, `Authorization`
//!   header or a cookie;
//! - `mint`: issuing HS256 tokens for the CLI and for tests.

mod claims;
mod error;
mod mint;
mod request;
mod verify;

#[cfg(test)]
mod test_keys;

pub use claims::{default_user_type, validate_subject, Claims, MAX_SUBJECT_CHARS};
pub use error::AuthError;
pub use mint::mint_hs256;
pub use request::token_from_request;
pub use verify::{KeySource, Verifier, VerifyOptions, MAX_TOKEN_BYTES};
