//! Request authentication: personal access tokens, `ghs_` installation tokens and App JWTs.

use serde::Deserialize;
use serde_json::Value;

use crate::config::AppConfig;

/// Who made a REST request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Identity {
    /// The configured personal access token.
    Pat,
    /// An installation token of this installation.
    Installation(u64),
    /// A valid App JWT.
    App,
    /// No credentials (only `/rate_limit` accepts this).
    Anonymous,
}

impl Identity {
    /// The rate-limit bucket of this identity.
    pub(crate) fn bucket(&self) -> String {
        match self {
            Self::Pat => "pat".to_owned(),
            Self::Installation(id) => format!("installation:{id}"),
            Self::App => "app".to_owned(),
            Self::Anonymous => "anonymous".to_owned(),
        }
    }
}

/// A parsed `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Credentials<'a> {
    /// `Bearer <t>`.
    Bearer(&'a str),
    /// `token <t>`.
    Token(&'a str),
    /// Any other scheme, or garbage.
    Other,
}

pub(crate) fn parse_authorization(value: &str) -> Credentials<'_> {
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return Credentials::Other;
    };
    let token = token.trim();
    if token.is_empty() {
        return Credentials::Other;
    }
    if scheme.eq_ignore_ascii_case("bearer") {
        Credentials::Bearer(token)
    } else if scheme.eq_ignore_ascii_case("token") {
        Credentials::Token(token)
    } else {
        Credentials::Other
    }
}

/// Whether a token looks like a JWT (three base64url segments, JSON header).
pub(crate) fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.split('.').count() == 3
}

#[derive(Deserialize)]
struct Claims {
    iat: Option<Value>,
    exp: Option<Value>,
    iss: Option<Value>,
}

/// Verifies an App JWT: RS256 signature, `iss` (App id or client id), `iat` not in the future
/// (60 s skew allowed), `exp` in the future and at most 10 minutes ahead. `Err` holds GitHub's
/// 401 message.
pub(crate) fn verify_jwt(
    key: &jsonwebtoken::DecodingKey,
    app: &AppConfig,
    token: &str,
    now: i64,
) -> Result<(), &'static str> {
    const UNDECODABLE: &str = "A JSON web token could not be decoded";
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Claims>(token, key, &validation).map_err(|_| UNDECODABLE)?;
    let claims = data.claims;
    let iss_ok = match &claims.iss {
        Some(Value::Number(n)) => n.as_u64() == Some(app.app_id),
        Some(Value::String(s)) => *s == app.client_id || *s == app.app_id.to_string(),
        _ => false,
    };
    if !iss_ok {
        return Err("'Issuer' claim ('iss') must be an Integer or the App's client ID");
    }
    let iat = claims.iat.as_ref().and_then(Value::as_i64);
    if iat.is_none_or(|iat| iat > now + 60) {
        return Err("'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued");
    }
    let exp = claims.exp.as_ref().and_then(Value::as_i64);
    match exp {
        Some(exp) if exp <= now => Err("'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires"),
        Some(exp) if exp > now + 600 + 60 => Err("'Expiration time' claim ('exp') is too far in the future"),
        Some(_) => Ok(()),
        None => Err("'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_schemes() {
        assert_eq!(
            parse_authorization("Bearer abc"),
            Credentials::Bearer("abc")
        );
        assert_eq!(parse_authorization("token abc"), Credentials::Token("abc"));
        assert_eq!(parse_authorization("Basic abc"), Credentials::Other);
        assert_eq!(parse_authorization("Bearer "), Credentials::Other);
        assert!(looks_like_jwt("eyJh.eyJi.sig"));
        assert!(!looks_like_jwt("ghp_abc"));
    }
}
