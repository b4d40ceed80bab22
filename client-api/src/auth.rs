//! Bearer tokens: JWTs signed with HS256 by the node's own key, and the extractor that turns
//! a valid one into an [`AuthUser`], the only proof of identity handlers accept.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use kith_proto::{DeviceId, ServerName, UserId};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::service::Caller;
use crate::state::ApiState;

/// How much clock skew token expiry tolerates, in seconds.
const LEEWAY_SECS: u64 = 5;

/// The claims of a kith token.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// The user id.
    sub: String,
    /// The issuing node's server name.
    iss: String,
    /// Issued at, seconds since the Unix epoch.
    iat: u64,
    /// Expires at, seconds since the Unix epoch.
    exp: u64,
    /// The device logged in (device 0 when absent).
    #[serde(default)]
    did: u32,
}

/// Issues and verifies the node's tokens.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    server: ServerName,
    ttl: Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys").field("server", &self.server).field("ttl", &self.ttl).finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Keys from the node's secret (at least 32 random bytes, kept in its data directory).
    pub fn new(secret: &[u8], server: ServerName, ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        validation.set_issuer(&[server.as_str()]);
        validation.leeway = LEEWAY_SECS;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            server,
            ttl,
        }
    }

    /// A token for `caller`'s device, valid for the configured lifetime.
    ///
    /// # Errors
    /// Only if signing fails, which is a bug.
    pub fn issue(&self, caller: &Caller) -> Result<String, ApiError> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: caller.user.to_string(),
            iss: self.server.to_string(),
            iat: now,
            exp: now.saturating_add(self.ttl.as_secs()),
            did: caller.device.0,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| crate::service::ServiceError::Internal(format!("signing token: {e}")).into())
    }

    /// The user and device a token speaks for.
    ///
    /// # Errors
    /// [`ApiError::TokenExpired`] after `exp`; [`ApiError::InvalidToken`] for anything else
    /// wrong (format, algorithm, signature, issuer, a user of another server).
    pub fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        self.verify_until(token).map(|(caller, _)| caller)
    }

    /// As [`TokenKeys::verify`], and from when the token is refused (after its `exp`, plus the
    /// leeway for clock skew), for connections that outlive a request.
    ///
    /// # Errors
    /// As [`TokenKeys::verify`].
    pub fn verify_until(&self, token: &str) -> Result<(Caller, SystemTime), ApiError> {
        // The header first, so that `alg: none` or an unknown algorithm is named as such rather
        // than as malformed claims.
        match jsonwebtoken::decode_header(token) {
            Ok(header) if header.alg == Algorithm::HS256 => {}
            Ok(_) => return Err(ApiError::InvalidToken("algorithm must be HS256".into())),
            Err(_) => {
                return Err(ApiError::InvalidToken("malformed token: a JWT header with alg HS256 expected".into()));
            }
        }
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => ApiError::TokenExpired,
                ErrorKind::InvalidSignature => ApiError::InvalidToken("signature does not verify".into()),
                ErrorKind::InvalidIssuer => ApiError::InvalidToken("issued by another server".into()),
                ErrorKind::InvalidAlgorithm => ApiError::InvalidToken("algorithm must be HS256".into()),
                ErrorKind::MissingRequiredClaim(claim) => ApiError::InvalidToken(format!("missing claim {claim}")),
                // A claim the node needs (`sub`, `iss`, `exp`) missing or of the wrong type.
                ErrorKind::Json(_) => {
                    ApiError::InvalidToken("claims must have sub, iss and exp of a kith token".into())
                }
                _ => ApiError::InvalidToken("malformed token".into()),
            })?;
        let user = UserId::parse(&data.claims.sub).map_err(|_| ApiError::InvalidToken("bad subject".into()))?;
        if !user.is_on(&self.server) {
            return Err(ApiError::InvalidToken("not a user of this server".into()));
        }
        // Accepted while the whole seconds of now are at most `exp` plus the leeway, so refused
        // from the second after that.
        let until = UNIX_EPOCH + Duration::from_secs(data.claims.exp.saturating_add(LEEWAY_SECS + 1));
        Ok((Caller { user, device: DeviceId(data.claims.did) }, until))
    }
}

/// The authenticated caller. Only [`TokenKeys::verify`] produces one, so a handler that takes
/// an `AuthUser` cannot act for anyone who did not present a valid token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser(Caller);

impl AuthUser {
    /// Who the token speaks for.
    pub fn caller(&self) -> &Caller {
        &self.0
    }

    /// The caller, for handing to the service.
    pub fn into_caller(self) -> Caller {
        self.0
    }
}

impl FromRequestParts<ApiState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        let token = header_token(parts)?.ok_or(ApiError::MissingToken)?;
        let caller = state.tokens.verify(token)?;
        state.service.check_device(&caller).await?;
        Ok(AuthUser(caller))
    }
}

/// The authenticated caller of the WebSocket endpoint, which also takes the token as `?token=`
/// because browsers cannot set headers on a WebSocket. (REST endpoints do not, so tokens stay
/// out of URLs and access logs there.) Its device is checked when the session opens
/// ([`ChatService::open_session`](crate::service::ChatService::open_session)), where the check
/// cannot race the device's removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsAuthUser {
    /// Who connects.
    caller: Caller,
    /// When the token stops being accepted (a request with it would be refused from then on):
    /// the connection closes then.
    until: SystemTime,
}

impl WsAuthUser {
    /// The caller, and when its token stops being accepted, for opening its session.
    pub fn into_parts(self) -> (Caller, SystemTime) {
        (self.caller, self.until)
    }
}

impl FromRequestParts<ApiState> for WsAuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        let token = match header_token(parts)? {
            Some(token) => token,
            None => query_token(parts).ok_or(ApiError::MissingToken)?,
        };
        state.tokens.verify_until(token).map(|(caller, until)| WsAuthUser { caller, until })
    }
}

/// The token from `Authorization: Bearer …`, if the header is present.
fn header_token(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let malformed = || ApiError::InvalidToken("Authorization must be `Bearer <token>`".into());
    let value = value.to_str().map_err(|_| malformed())?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
            Ok(Some(token.trim()))
        }
        _ => Err(malformed()),
    }
}

/// The token from `?token=…`.
fn query_token(parts: &Parts) -> Option<&str> {
    parts.uri.query()?.split('&').find_map(|pair| pair.strip_prefix("token=")).filter(|t| !t.is_empty())
}
