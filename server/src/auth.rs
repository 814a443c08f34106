//! Who is asking (A1, A2): JWT verification and minting, tenants and roles.
//!
//! The tenant and roles come from the verified token's claims and from nowhere else. This module
//! knows nothing of HTTP or GraphQL; the http layer hands it the bearer token.

use std::fmt;
use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::{AppError, AppResult, ErrorCode};

/// How long past its `exp` (and before its `nbf`) a token still verifies, for clocks that differ
/// between the issuer and Settle.
pub const TOKEN_LEEWAY_SECONDS: u64 = 30;

/// What a caller may do. Each role includes the ones before it (A2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads everything of its tenant.
    Viewer,
    /// Also creates and changes invoices, payments, allocations, refunds, credit notes, voids.
    Billing,
    /// Also manages settings, tax rates, payment methods and plugins.
    Admin,
}

impl Role {
    /// A role named exactly as in tokens: `VIEWER`, `BILLING` or `ADMIN`. Any other spelling
    /// (`admin`, `Admin`) is an unknown entry, which a token's `roles` claim ignores.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "VIEWER" => Some(Role::Viewer),
            "BILLING" => Some(Role::Billing),
            "ADMIN" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "VIEWER",
            Role::Billing => "BILLING",
            Role::Admin => "ADMIN",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tenant id as it appears in tokens: 1 to 64 characters of `a-z A-Z 0-9 _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(text: &str) -> Option<TenantId> {
        let valid = !text.is_empty()
            && text.len() <= 64
            && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        valid.then(|| TenantId(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The claims Settle reads from a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The caller (a user or a device); recorded as the actor of audit events.
    pub sub: String,
    pub tenant: String,
    pub roles: Vec<String>,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub tenant: TenantId,
    /// The highest role the token grants.
    pub role: Role,
    /// The token's `exp` (seconds since 1970): it verifies until [`TOKEN_LEEWAY_SECONDS`] after.
    pub expires_at: i64,
}

impl Principal {
    /// A2: refuse callers below `needed` with FORBIDDEN.
    pub fn require(&self, needed: Role) -> AppResult<()> {
        if self.role >= needed {
            Ok(())
        } else {
            Err(AppError::new(
                ErrorCode::Forbidden,
                format!("this needs the {needed} role; the token grants {}", self.role),
            ))
        }
    }
}

/// How tokens are verified (and, with a shared secret, minted).
pub enum TokenKeys {
    /// HS256 with a secret Settle keeps; Settle can mint tokens.
    Secret { secret: Vec<u8> },
    /// RS256 or ES256 tokens from an external identity provider; Settle only verifies.
    PublicKey { algorithm: Algorithm, key: DecodingKey },
}

impl TokenKeys {
    pub fn hs256(secret: Vec<u8>) -> TokenKeys {
        TokenKeys::Secret { secret }
    }

    /// Reads an RS256 or ES256 public key in PEM form.
    pub fn public_key_pem(algorithm: Algorithm, pem: &[u8]) -> anyhow::Result<TokenKeys> {
        let key = match algorithm {
            Algorithm::RS256 => DecodingKey::from_rsa_pem(pem)?,
            Algorithm::ES256 => DecodingKey::from_ec_pem(pem)?,
            other => anyhow::bail!("unsupported token algorithm {other:?}: use HS256, RS256 or ES256"),
        };
        Ok(TokenKeys::PublicKey { algorithm, key })
    }

    /// Loads the HS256 secret from `path`, creating a new random one there on first start.
    pub fn load_or_create_secret(path: &Path) -> anyhow::Result<TokenKeys> {
        if let Ok(text) = std::fs::read_to_string(path) {
            let secret = hex::decode(text.trim())
                .map_err(|e| anyhow::anyhow!("signing key {} is not hex: {e}", path.display()))?;
            anyhow::ensure!(secret.len() >= 32, "signing key {} is shorter than 32 bytes", path.display());
            return Ok(TokenKeys::hs256(secret));
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let secret: [u8; 32] = rand::random();
        write_private_file(path, hex::encode(secret).as_bytes())?;
        tracing::info!(path = %path.display(), "created a new token signing key");
        Ok(TokenKeys::hs256(secret.to_vec()))
    }

    /// A1: verifies signature, algorithm (pinned: "none" and any other never verify), expiry and
    /// not-before, then reads tenant and roles.
    pub fn verify(&self, token: &str) -> AppResult<Principal> {
        let unauthenticated = |why: &str| AppError::new(ErrorCode::Unauthenticated, format!("invalid token: {why}"));
        let (algorithm, key) = match self {
            TokenKeys::Secret { secret } => (Algorithm::HS256, DecodingKey::from_secret(secret)),
            TokenKeys::PublicKey { algorithm, key } => (*algorithm, key.clone()),
        };
        let mut validation = Validation::new(algorithm);
        validation.validate_nbf = true;
        validation.leeway = TOKEN_LEEWAY_SECONDS;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::ExpiredSignature => unauthenticated("expired"),
                K::ImmatureSignature => unauthenticated("not valid yet"),
                K::InvalidSignature => unauthenticated("bad signature"),
                K::InvalidAlgorithm => unauthenticated("algorithm not accepted"),
                _ => unauthenticated("malformed or missing claims"),
            }
        })?;
        let claims = data.claims;
        if claims.sub.trim().is_empty() || claims.sub.len() > 256 {
            return Err(unauthenticated("the subject (sub) must name the caller"));
        }
        let tenant = TenantId::parse(&claims.tenant).ok_or_else(|| unauthenticated("bad tenant claim"))?;
        let role = claims
            .roles
            .iter()
            .filter_map(|r| Role::parse(r))
            .max()
            .ok_or_else(|| unauthenticated("no known role (VIEWER, BILLING or ADMIN)"))?;
        Ok(Principal { subject: claims.sub, tenant, role, expires_at: claims.exp })
    }

    /// Mints a token; only possible with a shared secret.
    pub fn mint(&self, subject: &str, tenant: &TenantId, roles: &[Role], ttl: chrono::Duration) -> anyhow::Result<String> {
        let TokenKeys::Secret { secret } = self else {
            anyhow::bail!("tokens are issued by the external identity provider; Settle only verifies them");
        };
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: subject.to_owned(),
            tenant: tenant.as_str().to_owned(),
            roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
            exp: now + ttl.num_seconds(),
            nbf: None,
            iat: Some(now),
        };
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret))?)
    }
}

#[cfg(unix)]
fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Admin > Role::Billing && Role::Billing > Role::Viewer);
    }

    #[test]
    fn tenant_ids_are_plain() {
        assert!(TenantId::parse("demo-1_A").is_some());
        for bad in ["", "a b", "a/b", "ä", &"x".repeat(65)] {
            assert!(TenantId::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn a1_mint_then_verify_and_reject_other_key() {
        let keys = TokenKeys::hs256(vec![7; 32]);
        let tenant = TenantId::parse("t1").unwrap();
        let token = keys.mint("alice", &tenant, &[Role::Billing], chrono::Duration::hours(1)).unwrap();
        let who = keys.verify(&token).unwrap();
        assert_eq!((who.tenant, who.role), (tenant, Role::Billing));
        let other = TokenKeys::hs256(vec![8; 32]);
        assert_eq!(other.verify(&token).unwrap_err().code, ErrorCode::Unauthenticated);
    }
}
