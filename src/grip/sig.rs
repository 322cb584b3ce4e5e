//! `Grip-Sig`: a token on every request a `grip:` route forwards, so the app
//! can tell that it came through the proxy (and may answer with
//! instructions). HS256, claims `iss` and `exp`, as Pushpin makes it.

use jsonwebtoken::{encode, EncodingKey, Header};
use serde::Serialize;

use crate::broker::Timestamp;
use crate::defaults::GRIP_SIG_TTL;

/// The route's signing key and issuer. `Debug` never shows the key.
#[derive(Clone)]
pub struct Signer {
    key: EncodingKey,
    iss: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("iss", &self.iss)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    exp: i64,
}

impl Signer {
    pub fn new(key: &[u8], iss: String) -> Signer {
        Signer {
            key: EncodingKey::from_secret(key),
            iss,
        }
    }

    /// A fresh token; `None` only if signing fails (it cannot with HMAC).
    pub fn token(&self) -> Option<String> {
        let exp = Timestamp::now()
            .secs()
            .saturating_add(i64::try_from(GRIP_SIG_TTL.as_secs()).unwrap_or(i64::MAX));
        let claims = Claims {
            iss: &self.iss,
            exp,
        };
        encode(&Header::default(), &claims, &self.key).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, DecodingKey, Validation};

    #[derive(serde::Deserialize)]
    struct Read {
        iss: String,
        exp: i64,
    }

    #[test]
    fn a_token_verifies_with_the_key_and_names_its_issuer() {
        let token = Signer::new(b"secret", "pollgate".into()).token().unwrap();
        let mut v = Validation::new(jsonwebtoken::Algorithm::HS256);
        v.set_issuer(&["pollgate"]);
        let read = decode::<Read>(&token, &DecodingKey::from_secret(b"secret"), &v).unwrap();
        assert_eq!(read.claims.iss, "pollgate");
        assert!(read.claims.exp > Timestamp::now().secs());
        assert!(decode::<Read>(&token, &DecodingKey::from_secret(b"other"), &v).is_err());
    }
}
