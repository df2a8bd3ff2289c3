//! Principals and roles (`serve --auth FILE`), shared by every listener: the HTTP API, the
//! PostgreSQL wire and the OTLP receivers all ask this module who a token belongs to and what
//! that principal may do.
//!
//! The file (YAML):
//!
//! ```yaml
//! ops_can_read_finance: false      # optional; finance tables are hidden from ops by default
//! principals:
//!   - name: alice
//!     role: admin                  # admin | finance | ops | ingest | tenant
//!     token_sha256: 5e88...        # hex SHA-256 of the token (never the token itself)
//!   - name: acme-collector
//!     role: ingest
//!     tenant: acme                 # optional for ingest: the payload cannot claim another tenant
//!     token_sha256: ...
//!   - name: acme-portal
//!     role: tenant                 # a tenant-scoped reader: only acme's rows, everywhere
//!     tenant: acme
//!     token_sha256: ...
//! ```
//!
//! A token is looked up by its SHA-256, so the file holds nothing that would let a reader of it
//! authenticate.

use std::{
    collections::HashMap,
    fmt,
    path::Path,
    sync::{Arc, RwLock},
};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything: every table, DDL, settings, the audit log.
    Admin,
    /// Reads every table and view but the audit log, imports billing and business data.
    Finance,
    /// Reads telemetry, usage, tenants, alerts and ingest statistics; finance tables only when
    /// the file says `ops_can_read_finance: true`.
    Ops,
    /// Sends OTLP (bound to one tenant when `tenant` is set); imports billing when unbound.
    Ingest,
    /// Reads only its tenant's rows, in every table and view that has a `tenant_id`.
    Tenant,
}

impl Role {
    /// The name used in the file and in the audit log.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Finance => "finance",
            Role::Ops => "ops",
            Role::Ingest => "ingest",
            Role::Tenant => "tenant",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One entry of the principals file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    /// Who (the user name on the PostgreSQL wire, the actor in the audit log).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The tenant a `tenant` reader is confined to, or an `ingest` token is bound to.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Hex SHA-256 of the token.
    pub token_sha256: String,
}

impl Principal {
    /// The principal of a server started with authentication off (`serve --no-auth`): an
    /// admin, so that the demo can do everything.
    pub fn anonymous() -> Self {
        Self { name: "anonymous".into(), role: Role::Admin, tenant: None, token_sha256: String::new() }
    }

    /// Whether it may run SQL.
    pub fn can_query(&self) -> bool {
        !matches!(self.role, Role::Ingest)
    }

    /// Whether it may send OTLP.
    pub fn can_ingest(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Ingest)
    }

    /// Whether it may import billing and business data (files that span tenants).
    pub fn can_import(&self) -> bool {
        match self.role {
            Role::Admin | Role::Finance => true,
            Role::Ingest => self.tenant.is_none(),
            Role::Ops | Role::Tenant => false,
        }
    }

    /// Whether it may read the service's own state (metrics, rule status).
    pub fn can_operate(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Ops)
    }

    /// The tenant an ingest token is bound to (its rows are that tenant's, whatever the
    /// payload says).
    pub fn bound_tenant(&self) -> Option<&str> {
        match self.role {
            Role::Ingest => self.tenant.as_deref(),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    ops_can_read_finance: bool,
    principals: Vec<Principal>,
}

/// The principals of a principals file, looked up by token. Clones share one set, which
/// [`Principals::reload`] replaces for all of them at once.
#[derive(Debug, Clone)]
pub struct Principals {
    current: Arc<RwLock<Arc<Set>>>,
}

#[derive(Debug)]
struct Set {
    by_digest: HashMap<[u8; 32], Arc<Principal>>,
    by_name: HashMap<String, Arc<Principal>>,
    ops_can_read_finance: bool,
}

/// A principals file that cannot be used, with where and why.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct AuthFileError {
    file: String,
    message: String,
}

impl Principals {
    /// Reads and checks a principals file.
    pub fn load(path: &Path) -> Result<Self, AuthFileError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuthFileError { file: file.clone(), message: format!("cannot read it: {e}") })?;
        Self::parse(&text, &file)
    }

    /// Parses principals file text; `file` says where it came from in messages.
    pub fn parse(text: &str, file: &str) -> Result<Self, AuthFileError> {
        let err = |message: String| AuthFileError { file: file.to_string(), message };
        let parsed: File = serde_yaml_ng::from_str(text).map_err(|e| err(e.to_string()))?;
        let mut by_digest = HashMap::new();
        let mut by_name = HashMap::new();
        for (i, p) in parsed.principals.into_iter().enumerate() {
            let at = format!("principals[{i}] ({})", p.name);
            if p.name.trim().is_empty() {
                return Err(err(format!("principals[{i}]: the name is empty")));
            }
            let digest = parse_digest(&p.token_sha256).map_err(|m| err(format!("{at}: token_sha256 {m}")))?;
            match (p.role, &p.tenant) {
                (Role::Tenant, None) => {
                    return Err(err(format!("{at}: role tenant needs `tenant: <tenant_id>`")));
                }
                (Role::Admin | Role::Finance | Role::Ops, Some(t)) => {
                    return Err(err(format!(
                        "{at}: role {} sees every tenant and cannot be bound to {t:?}; use role tenant",
                        p.role
                    )));
                }
                (_, Some(t)) if t.trim().is_empty() => return Err(err(format!("{at}: the tenant is empty"))),
                _ => {}
            }
            let p = Arc::new(p);
            if by_name.insert(p.name.clone(), Arc::clone(&p)).is_some() {
                return Err(err(format!("{at}: the name {:?} is used twice", p.name)));
            }
            if by_digest.insert(digest, p).is_some() {
                return Err(err(format!("{at}: the same token is given to two principals")));
            }
        }
        if by_name.is_empty() {
            return Err(err("no principals: nobody could connect".into()));
        }
        let set = Set { by_digest, by_name, ops_can_read_finance: parsed.ops_can_read_finance };
        Ok(Self { current: Arc::new(RwLock::new(Arc::new(set))) })
    }

    fn set(&self) -> Arc<Set> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reads the principals file again and, when it is valid, puts its principals in place of
    /// the current ones for every clone (new tokens work, removed ones stop working, for each
    /// request and login from now on); when it is not, changes nothing and says why. Returns
    /// the number of principals now in force.
    pub fn reload(&self, path: &Path) -> Result<usize, AuthFileError> {
        let fresh = Self::load(path)?.set();
        let count = fresh.by_name.len();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(count)
    }

    /// The principal whose token this is.
    pub fn authenticate(&self, token: &str) -> Option<Arc<Principal>> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.set().by_digest.get(&digest).cloned()
    }

    /// The principal named `name`, if `token` is its token (the PostgreSQL wire, where the user
    /// name is sent beside the password).
    pub fn authenticate_as(&self, name: &str, token: &str) -> Option<Arc<Principal>> {
        let p = self.authenticate(token)?;
        (p.name == name).then_some(p)
    }

    /// A principal by name.
    pub fn get(&self, name: &str) -> Option<Arc<Principal>> {
        self.set().by_name.get(name).cloned()
    }

    /// Whether ops may read the finance tables (as the file said when the server started:
    /// the query engine's scopes are set up from it once).
    pub fn ops_can_read_finance(&self) -> bool {
        self.set().ops_can_read_finance
    }
}

/// The hex SHA-256 of a token, as the principals file wants it.
pub fn token_sha256(token: &str) -> String {
    const_hex::encode(Sha256::digest(token.as_bytes()))
}

fn parse_digest(hex: &str) -> Result<[u8; 32], String> {
    let bytes = const_hex::decode(hex.trim()).map_err(|e| format!("is not hex: {e}"))?;
    bytes.try_into().map_err(|b: Vec<u8>| format!("has {} bytes, a SHA-256 has 32", b.len()))
}

/// An authenticated caller: the principal, and where it called from.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who.
    pub principal: Arc<Principal>,
    /// The client's address, when known.
    pub remote_addr: Option<String>,
}

impl Caller {
    /// The caller of a request with authentication off, or of the process itself.
    pub fn anonymous() -> Self {
        Self { principal: Arc::new(Principal::anonymous()), remote_addr: None }
    }
}

/// How a server authenticates callers.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Every caller is [`Principal::anonymous`] (an admin): `serve --no-auth`, the demo.
    Off,
    /// Every caller must present a token of the principals file.
    On(Principals),
}

/// Why a caller was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No credentials, or credentials of nobody. (A known principal without a right is the
    /// caller's to refuse: only it knows what the request needs.)
    #[error("{0}")]
    Unauthenticated(String),
}

impl Auth {
    /// The caller presenting `authorization` (an HTTP `Authorization` header value or gRPC
    /// `authorization` metadata: `Bearer TOKEN`).
    pub fn bearer(&self, authorization: Option<&str>) -> Result<Arc<Principal>, Refusal> {
        let principals = match self {
            Auth::Off => return Ok(Arc::new(Principal::anonymous())),
            Auth::On(p) => p,
        };
        let Some(value) = authorization else {
            return Err(Refusal::Unauthenticated("missing `Authorization: Bearer <token>`".into()));
        };
        let token =
            value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).ok_or_else(|| {
                Refusal::Unauthenticated("the Authorization header is not `Bearer <token>`".into())
            })?;
        principals
            .authenticate(token.trim())
            .ok_or_else(|| Refusal::Unauthenticated("the token is not valid".into()))
    }

    /// Whether callers must authenticate.
    pub fn is_on(&self) -> bool {
        matches!(self, Auth::On(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(extra: &str) -> String {
        format!(
            "principals:\n  - {{name: root, role: admin, token_sha256: {}}}\n  - {{name: acme, role: tenant, tenant: acme, token_sha256: {}}}\n{extra}",
            token_sha256("root-token"),
            token_sha256("acme-token")
        )
    }

    #[test]
    fn a_reload_reaches_every_clone_and_a_bad_file_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.yaml");
        std::fs::write(&path, file("")).unwrap();
        let p = Principals::load(&path).unwrap();
        let held = p.clone();
        let more = format!("  - {{name: ops, role: ops, token_sha256: {}}}\n", token_sha256("ops-token"));
        std::fs::write(&path, file(&more).replace("acme", "globex")).unwrap();
        assert_eq!(p.reload(&path).unwrap(), 3);
        assert_eq!(held.authenticate("ops-token").unwrap().role, Role::Ops);
        // The same token, now given to another principal of another tenant.
        assert!(held.get("acme").is_none());
        assert_eq!(held.authenticate("acme-token").unwrap().tenant.as_deref(), Some("globex"));
        std::fs::write(&path, "principals: [").unwrap();
        assert!(p.reload(&path).unwrap_err().to_string().starts_with(&path.display().to_string()));
        assert_eq!(held.authenticate("ops-token").unwrap().role, Role::Ops);
    }

    #[test]
    fn tokens_are_found_by_their_digest() {
        let p = Principals::parse(&file(""), "auth.yaml").unwrap();
        assert_eq!(p.authenticate("root-token").unwrap().role, Role::Admin);
        assert_eq!(p.authenticate("acme-token").unwrap().tenant.as_deref(), Some("acme"));
        assert!(p.authenticate("root-token ").is_none());
        assert!(p.authenticate("").is_none());
        assert!(p.authenticate_as("acme", "root-token").is_none());
        assert_eq!(p.authenticate_as("root", "root-token").unwrap().name, "root");
        let auth = Auth::On(p);
        assert_eq!(auth.bearer(Some("Bearer acme-token")).unwrap().name, "acme");
        assert!(matches!(auth.bearer(None), Err(Refusal::Unauthenticated(_))));
        assert!(matches!(auth.bearer(Some("Basic abc")), Err(Refusal::Unauthenticated(_))));
        assert!(matches!(auth.bearer(Some("Bearer nope")), Err(Refusal::Unauthenticated(_))));
        assert_eq!(Auth::Off.bearer(None).unwrap().role, Role::Admin);
    }

    #[test]
    fn mistakes_are_named() {
        let e = |text: &str| Principals::parse(text, "auth.yaml").unwrap_err().to_string();
        assert!(e("principals: []").contains("no principals"), "{}", e("principals: []"));
        let bad_hex = "principals:\n  - {name: a, role: admin, token_sha256: xyz}\n";
        assert!(e(bad_hex).contains("principals[0] (a): token_sha256 is not hex"), "{}", e(bad_hex));
        let short = "principals:\n  - {name: a, role: admin, token_sha256: abcd}\n";
        assert!(e(short).contains("has 2 bytes"), "{}", e(short));
        let h = token_sha256("t");
        let unbound = format!("principals:\n  - {{name: a, role: tenant, token_sha256: {h}}}\n");
        assert!(e(&unbound).contains("role tenant needs"), "{}", e(&unbound));
        let bound_admin = format!("principals:\n  - {{name: a, role: ops, tenant: x, token_sha256: {h}}}\n");
        assert!(e(&bound_admin).contains("cannot be bound"), "{}", e(&bound_admin));
        let twice = format!(
            "principals:\n  - {{name: a, role: ops, token_sha256: {h}}}\n  - {{name: b, role: ops, token_sha256: {h}}}\n"
        );
        assert!(e(&twice).contains("same token"), "{}", e(&twice));
        let role = format!("principals:\n  - {{name: a, role: root, token_sha256: {h}}}\n");
        assert!(e(&role).contains("unknown variant `root`"), "{}", e(&role));
        assert!(e(&file("extra: 1\n")).contains("unknown field `extra`"));
    }

    #[test]
    fn the_example_file_holds_the_tokens_it_says() {
        let p = Principals::parse(include_str!("../../examples/auth.yaml"), "examples/auth.yaml").unwrap();
        for name in ["admin", "finance", "ops", "acme-collector", "acme-portal"] {
            assert_eq!(p.authenticate(&format!("{name}-token")).unwrap().name, name);
        }
        assert_eq!(p.get("acme-collector").unwrap().bound_tenant(), Some("acme"));
        assert!(!p.ops_can_read_finance());
    }

    #[test]
    fn rights_follow_the_role() {
        let p = Principals::parse(&file(""), "auth.yaml").unwrap();
        let acme = p.get("acme").unwrap();
        assert!(acme.can_query() && !acme.can_ingest() && !acme.can_import() && !acme.can_operate());
        let ingest = Principal {
            name: "c".into(),
            role: Role::Ingest,
            tenant: Some("acme".into()),
            token_sha256: String::new(),
        };
        assert!(!ingest.can_query() && ingest.can_ingest() && !ingest.can_import());
        assert_eq!(ingest.bound_tenant(), Some("acme"));
        assert!(Principal { tenant: None, ..ingest }.can_import());
        assert_eq!(acme.bound_tenant(), None);
    }
}
