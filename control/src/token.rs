//! Participant tokens: HS256 JWTs that open one room with a set of grants.
//!
//! The server signs every token it accepts, with one secret, so only HS256 is
//! accepted: a token naming any other algorithm (including `none`) is refused
//! before its signature is looked at. Expiry is checked against the `now_unix`
//! the caller passes in, not the system clock, so the rules are tested with a
//! fake clock.

use std::fmt;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::names::{RoomName, StreamName};

/// How far the clocks of the issuer and this server may disagree: a token is
/// still accepted this many seconds after its `exp`.
pub const CLOCK_SKEW_SECS: u64 = 5;

/// What a token lets its bearer do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// May publish the stream named after the token's identity.
    pub publish: bool,
    /// May watch the room's streams.
    pub subscribe: bool,
    /// May do everything in the room, including publishing any stream.
    pub admin: bool,
}

/// The claims inside a participant token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Participant identity (`sub`).
    pub sub: String,
    /// The one room this token opens.
    pub room: RoomName,
    /// What the bearer may do in that room.
    pub grants: Grants,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
    /// The incarnation of the room it was issued for
    /// ([`RoomSpec::incarnation`](crate::room::RoomSpec::incarnation)): a
    /// room deleted and created again under the same name has another one,
    /// so the old room's tokens do not open the new room. Tokens issued
    /// before incarnations existed have none (0), like the rooms stored then.
    #[serde(default)]
    pub inc: u64,
    /// The room's token generation when it was issued
    /// ([`RoomSpec::token_generation`](crate::room::RoomSpec::token_generation)):
    /// revoking every token of a room moves the room to the next one, and
    /// the tokens of earlier generations are refused.
    #[serde(default)]
    pub rgen: u32,
    /// Its id, by which it can be revoked (RevokeToken); tokens issued
    /// before ids existed have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

impl Claims {
    /// Claims for `identity` in `room` (of incarnation `incarnation`) valid
    /// for `ttl` from `now_unix` (seconds).
    pub fn new(
        identity: &str,
        room: &RoomName,
        incarnation: u64,
        grants: Grants,
        now_unix: u64,
        ttl: Duration,
    ) -> Self {
        Claims {
            sub: identity.to_owned(),
            room: room.clone(),
            grants,
            iat: now_unix,
            exp: now_unix.saturating_add(ttl.as_secs()),
            inc: incarnation,
            rgen: 0,
            jti: None,
        }
    }
}

/// What a request wants to do with a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send media (WHIP).
    Publish,
    /// Receive media (WHEP) or watch events.
    Subscribe,
    /// Manage the room.
    Admin,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
            Action::Admin => "admin",
        })
    }
}

/// Why a token was refused. `Unauthorized` variants map to HTTP 401 / gRPC
/// unauthenticated; `Forbidden` ones to 403 / permission_denied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The request carried no token at all (set by the transport layer). Unauthorized.
    #[error("no token given")]
    Missing,
    /// The text is not a JWT of ours: wrong shape, bad base64 or JSON, an
    /// algorithm other than HS256, or claims missing or invalid. Unauthorized.
    #[error("token is malformed")]
    Malformed,
    /// The signature does not match: tampered with, or signed with another secret. Unauthorized.
    #[error("token signature is invalid")]
    BadSignature,
    /// The token's `exp` has passed. Unauthorized.
    #[error("token expired")]
    Expired,
    /// The token is valid but opens another room. Forbidden.
    #[error("token is for another room")]
    WrongRoom,
    /// The token is valid for the room but lacks the grant for this action. Forbidden.
    #[error("token does not grant {0}")]
    MissingGrant(Action),
    /// A publish token may only publish the stream named after its identity. Forbidden.
    #[error("token may only publish the stream named after its identity")]
    WrongIdentity,
    /// The token names the room, but an earlier incarnation of it: the room
    /// it was issued for was deleted and this one created under the same
    /// name. Unauthorized: the token is dead, as if expired.
    #[error(
        "this token was issued for an earlier room named {0}, since deleted: ask for a new token"
    )]
    EarlierRoom(RoomName),
    /// The token was revoked by its id (RevokeToken). Unauthorized.
    #[error("this token ({0}) was revoked: ask for a new token")]
    Revoked(String),
    /// Every token of the room issued until some time was revoked
    /// (RevokeRoomTokens), this one among them. Unauthorized.
    #[error(
        "this token was revoked with every token issued for room {0} until then: ask for a new token"
    )]
    RevokedWithRoom(RoomName),
}

impl TokenError {
    /// Whether the bearer is known but not allowed (403), as opposed to not
    /// authenticated at all (401).
    pub fn is_forbidden(&self) -> bool {
        match self {
            TokenError::Missing
            | TokenError::Malformed
            | TokenError::BadSignature
            | TokenError::Expired
            | TokenError::EarlierRoom(_)
            | TokenError::Revoked(_)
            | TokenError::RevokedWithRoom(_) => false,
            TokenError::WrongRoom | TokenError::MissingGrant(_) | TokenError::WrongIdentity => true,
        }
    }
}

/// Signs and verifies tokens with one HS256 secret.
#[derive(Clone)]
pub struct TokenSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSigner")
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl TokenSigner {
    /// A signer for `secret`; use the 32 random bytes from
    /// [`load_or_create_secrets`](crate::store::load_or_create_secrets).
    pub fn new(secret: &[u8]) -> Self {
        // Only HS256; `decode` refuses a token whose header names anything
        // else, which is what keeps `alg: none` and RS/HS confusion out.
        let mut validation = Validation::new(Algorithm::HS256);
        // jsonwebtoken's expiry check reads the system clock; expiry is
        // checked in `verify` against the caller's `now_unix` instead.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        // Our tokens carry no audience; a token that does was not made by us
        // for this purpose, but it is signed with our secret, so do not fail
        // on it either: the typed claims decide.
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        TokenSigner {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Signs a token for `identity` in `room` valid for `ttl` from
    /// `now_unix` (seconds), with no room incarnation: it opens only a room
    /// stored before incarnations existed. The server signs with
    /// [`TokenSigner::sign`]; this is for tests and tools.
    pub fn issue(
        &self,
        identity: &str,
        room: &RoomName,
        grants: Grants,
        now_unix: u64,
        ttl: Duration,
    ) -> Result<String, TokenError> {
        self.sign(&Claims::new(identity, room, 0, grants, now_unix, ttl))
    }

    /// Signs `claims`.
    pub fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        // Encoding plain structs with an HMAC key cannot fail in practice;
        // the error is mapped rather than unwrapped to keep this panic-free.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|_| TokenError::Malformed)
    }

    /// Verifies signature and expiry at `now_unix` (no leeway beyond
    /// [`CLOCK_SKEW_SECS`]), returns the claims.
    pub fn verify(&self, token: &str, now_unix: u64) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => TokenError::BadSignature,
                // Everything else (shape, base64, JSON, algorithm, claim
                // format) means the text is not a token we issued.
                _ => TokenError::Malformed,
            })?;
        let claims = data.claims;
        if now_unix >= claims.exp.saturating_add(CLOCK_SKEW_SECS) {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }

    /// Verifies and checks the token opens `room` for `action`.
    ///
    /// For [`Action::Publish`], `stream` must equal the identity (a publisher
    /// publishes its own stream); `None` is refused with `WrongIdentity`
    /// because there is nothing to check it against. The admin grant allows
    /// every action in its room, publishing any stream included.
    pub fn authorize(
        &self,
        token: &str,
        room: &RoomName,
        action: Action,
        stream: Option<&StreamName>,
        now_unix: u64,
    ) -> Result<Claims, TokenError> {
        let claims = self.verify(token, now_unix)?;
        if claims.room != *room {
            return Err(TokenError::WrongRoom);
        }
        if claims.grants.admin {
            return Ok(claims);
        }
        let granted = match action {
            Action::Publish => claims.grants.publish,
            Action::Subscribe => claims.grants.subscribe,
            Action::Admin => false,
        };
        if !granted {
            return Err(TokenError::MissingGrant(action));
        }
        if action == Action::Publish && stream.map(StreamName::as_str) != Some(claims.sub.as_str())
        {
            return Err(TokenError::WrongIdentity);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;
    const HOUR: Duration = Duration::from_secs(3600);

    fn signer() -> TokenSigner {
        TokenSigner::new(b"test-secret-of-at-least-32-bytes!")
    }

    fn room(name: &str) -> RoomName {
        RoomName::new(name).unwrap()
    }

    fn stream(name: &str) -> StreamName {
        StreamName::new(name).unwrap()
    }

    fn grants(publish: bool, subscribe: bool, admin: bool) -> Grants {
        Grants {
            publish,
            subscribe,
            admin,
        }
    }

    fn b64url(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn issue_then_verify_round_trips() {
        let s = signer();
        let g = grants(true, true, false);
        let token = s.issue("cam1", &room("lobby"), g, NOW, HOUR).unwrap();
        let claims = s.verify(&token, NOW + 10).unwrap();
        assert_eq!(
            claims,
            Claims {
                sub: "cam1".into(),
                room: room("lobby"),
                grants: g,
                iat: NOW,
                exp: NOW + 3600,
                inc: 0,
                rgen: 0,
                jti: None,
            }
        );
    }

    #[test]
    fn expiry_allows_only_the_clock_skew() {
        let s = signer();
        let token = s
            .issue("cam1", &room("lobby"), Grants::default(), NOW, HOUR)
            .unwrap();
        let exp = NOW + 3600;
        assert!(s.verify(&token, exp).is_ok());
        assert!(s.verify(&token, exp + CLOCK_SKEW_SECS - 1).is_ok());
        assert_eq!(
            s.verify(&token, exp + CLOCK_SKEW_SECS),
            Err(TokenError::Expired)
        );
        assert_eq!(s.verify(&token, exp + 3600), Err(TokenError::Expired));
    }

    #[test]
    fn tampered_payload_is_a_bad_signature() {
        let s = signer();
        let token = s
            .issue(
                "cam1",
                &room("lobby"),
                grants(false, true, false),
                NOW,
                HOUR,
            )
            .unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let mut payload = parts[1].as_bytes().to_vec();
        let mid = payload.len() / 2;
        payload[mid] = if payload[mid] == b'A' { b'B' } else { b'A' };
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            String::from_utf8(payload).unwrap(),
            parts[2]
        );
        assert_eq!(s.verify(&tampered, NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn another_secret_is_a_bad_signature() {
        let other = TokenSigner::new(b"another-secret-entirely-32-bytes");
        let token = other
            .issue("cam1", &room("lobby"), Grants::default(), NOW, HOUR)
            .unwrap();
        assert_eq!(signer().verify(&token, NOW), Err(TokenError::BadSignature));
    }

    #[test]
    fn garbage_is_malformed() {
        let s = signer();
        let token = s
            .issue("cam1", &room("lobby"), Grants::default(), NOW, HOUR)
            .unwrap();
        let two_segments = token.rsplit_once('.').unwrap().0.to_owned();
        for bad in [
            "",
            "garbage",
            "a.b.c",
            "...",
            &two_segments,
            &format!("{token}.extra"),
        ] {
            assert_eq!(s.verify(bad, NOW), Err(TokenError::Malformed), "{bad:?}");
        }
    }

    /// A token with `payload` as its claims, signed with the test secret
    /// by hand (not through [`TokenSigner`]).
    fn hs256_signed(payload: &[u8]) -> String {
        let header = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
        let message = format!("{header}.{}", b64url(payload));
        let sig = jsonwebtoken::crypto::sign(
            message.as_bytes(),
            &EncodingKey::from_secret(b"test-secret-of-at-least-32-bytes!"),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{message}.{sig}")
    }

    #[test]
    fn valid_signature_over_bad_claims_is_malformed() {
        // A token we signed whose room is not a valid name: the signature is
        // fine, the claims are not.
        let s = signer();
        let token = hs256_signed(br#"{"sub":"x","room":"a/b","grants":{"publish":true,"subscribe":false,"admin":false},"iat":1,"exp":99999999999}"#);
        assert_eq!(s.verify(&token, NOW), Err(TokenError::Malformed));
    }

    #[test]
    fn a_token_issued_before_incarnations_reads_as_incarnation_zero() {
        let s = signer();
        let payload = format!(
            r#"{{"sub":"cam1","room":"lobby","grants":{{"publish":true,"subscribe":false,"admin":false}},"iat":{NOW},"exp":{}}}"#,
            NOW + 3600
        );
        let claims = s.verify(&hs256_signed(payload.as_bytes()), NOW).unwrap();
        assert_eq!((claims.inc, claims.rgen, claims.jti), (0, 0, None));
        // A new one carries its room's incarnation, generation and its id.
        let claims = Claims {
            rgen: 3,
            jti: Some("abc".into()),
            ..Claims::new("cam1", &room("lobby"), 42, Grants::default(), NOW, HOUR)
        };
        let token = s.sign(&claims).unwrap();
        assert_eq!(s.verify(&token, NOW).unwrap(), claims);
    }

    #[test]
    fn alg_none_is_refused() {
        let s = signer();
        let header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = b64url(
            format!(
                r#"{{"sub":"cam1","room":"lobby","grants":{{"publish":true,"subscribe":true,"admin":true}},"iat":{NOW},"exp":{}}}"#,
                NOW + 3600
            )
            .as_bytes(),
        );
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            let err = s.verify(&token, NOW).unwrap_err();
            assert!(
                matches!(err, TokenError::Malformed | TokenError::BadSignature),
                "{err:?}"
            );
        }
    }

    #[test]
    fn other_hmac_algorithms_are_refused() {
        // Signed with our own secret, but HS512: only HS256 is ours.
        let key = EncodingKey::from_secret(b"test-secret-of-at-least-32-bytes!");
        let claims = Claims {
            sub: "cam1".into(),
            room: room("lobby"),
            grants: grants(true, true, true),
            iat: NOW,
            exp: NOW + 3600,
            inc: 0,
            rgen: 0,
            jti: None,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims, &key).unwrap();
        assert_eq!(signer().verify(&token, NOW), Err(TokenError::Malformed));
    }

    #[test]
    fn token_for_another_room_is_wrong_room() {
        let s = signer();
        let token = s
            .issue(
                "viewer",
                &room("lobby"),
                grants(true, true, false),
                NOW,
                HOUR,
            )
            .unwrap();
        assert_eq!(
            s.authorize(&token, &room("other"), Action::Subscribe, None, NOW),
            Err(TokenError::WrongRoom)
        );
    }

    #[test]
    fn subscribe_only_token_cannot_publish() {
        let s = signer();
        let token = s
            .issue(
                "cam1",
                &room("lobby"),
                grants(false, true, false),
                NOW,
                HOUR,
            )
            .unwrap();
        let r = room("lobby");
        assert!(
            s.authorize(&token, &r, Action::Subscribe, None, NOW)
                .is_ok()
        );
        assert_eq!(
            s.authorize(&token, &r, Action::Publish, Some(&stream("cam1")), NOW),
            Err(TokenError::MissingGrant(Action::Publish))
        );
        assert_eq!(
            s.authorize(&token, &r, Action::Admin, None, NOW),
            Err(TokenError::MissingGrant(Action::Admin))
        );
    }

    #[test]
    fn publisher_publishes_only_its_own_stream() {
        let s = signer();
        let r = room("lobby");
        let token = s
            .issue("cam1", &r, grants(true, false, false), NOW, HOUR)
            .unwrap();
        let claims = s
            .authorize(&token, &r, Action::Publish, Some(&stream("cam1")), NOW)
            .unwrap();
        assert_eq!(claims.sub, "cam1");
        assert_eq!(
            s.authorize(&token, &r, Action::Publish, Some(&stream("cam2")), NOW),
            Err(TokenError::WrongIdentity)
        );
        assert_eq!(
            s.authorize(&token, &r, Action::Publish, None, NOW),
            Err(TokenError::WrongIdentity)
        );
        assert_eq!(
            s.authorize(&token, &r, Action::Subscribe, None, NOW),
            Err(TokenError::MissingGrant(Action::Subscribe))
        );
    }

    #[test]
    fn admin_may_do_everything_in_its_room_only() {
        let s = signer();
        let r = room("lobby");
        let token = s
            .issue("ops", &r, grants(false, false, true), NOW, HOUR)
            .unwrap();
        for (action, st) in [
            (Action::Publish, Some(stream("any-stream"))),
            (Action::Subscribe, None),
            (Action::Admin, None),
        ] {
            assert!(s.authorize(&token, &r, action, st.as_ref(), NOW).is_ok());
            assert_eq!(
                s.authorize(&token, &room("other"), action, st.as_ref(), NOW),
                Err(TokenError::WrongRoom)
            );
        }
    }

    #[test]
    fn authorize_checks_expiry_first() {
        let s = signer();
        let r = room("lobby");
        let token = s
            .issue("ops", &r, grants(true, true, true), NOW, HOUR)
            .unwrap();
        assert_eq!(
            s.authorize(&token, &r, Action::Admin, None, NOW + 2 * 3600),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn forbidden_versus_unauthorized() {
        let unauthorized = [
            TokenError::Missing,
            TokenError::Malformed,
            TokenError::BadSignature,
            TokenError::Expired,
            TokenError::EarlierRoom(room("lobby")),
            TokenError::Revoked("abc".into()),
            TokenError::RevokedWithRoom(room("lobby")),
        ];
        let forbidden = [
            TokenError::WrongRoom,
            TokenError::MissingGrant(Action::Publish),
            TokenError::MissingGrant(Action::Subscribe),
            TokenError::MissingGrant(Action::Admin),
            TokenError::WrongIdentity,
        ];
        assert!(unauthorized.iter().all(|e| !e.is_forbidden()));
        assert!(forbidden.iter().all(TokenError::is_forbidden));
    }

    #[test]
    fn messages_and_debug_are_readable() {
        assert_eq!(TokenError::Expired.to_string(), "token expired");
        assert_eq!(
            TokenError::MissingGrant(Action::Publish).to_string(),
            "token does not grant publish"
        );
        let debug = format!("{:?}", signer());
        assert!(!debug.contains("test-secret"), "{debug}");
    }
}
