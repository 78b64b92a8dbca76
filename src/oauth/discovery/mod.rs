//! Finding where to authorize and redeem tokens for a protected resource, as MCP clients must:
//! RFC 9728 protected-resource metadata, then RFC 8414 authorization-server metadata, vetted
//! (feature `http`).
//!
//! The steps, each usable on its own:
//! 1. [`protected_resource_urls`] / [`well_known_urls`]: where the documents may be, in MCP's
//!    order (pure);
//! 2. [`ProtectedResourceMetadata::from_json`] / [`AuthorizationServerMetadata::from_json`]:
//!    parse and vet a document for the identifier it was fetched for (pure; the `issuer` or
//!    `resource` must be identical, PKCE `S256` is required, endpoints must be `https`);
//! 3. [`Discovery`]: fetch them over HTTP — no redirects followed, bounded bodies, timeouts.
//!
//! ```
//! use keepfresh::oauth::discovery::{well_known_urls, AuthorizationServerMetadata};
//!
//! let issuer = "https://auth.example.com/tenant1";
//! let first = &well_known_urls(issuer).unwrap()[0];
//! assert_eq!(first.as_str(), "https://auth.example.com/.well-known/oauth-authorization-server/tenant1");
//!
//! // What that URL answered:
//! let body = br#"{"issuer": "https://auth.example.com/tenant1",
//!     "authorization_endpoint": "https://auth.example.com/tenant1/authorize",
//!     "token_endpoint": "https://auth.example.com/tenant1/token",
//!     "response_types_supported": ["code"],
//!     "code_challenge_methods_supported": ["S256"]}"#;
//! let meta = AuthorizationServerMetadata::from_json(body, issuer).unwrap();
//! assert_eq!(meta.token_endpoint.path(), "/tenant1/token");
//! ```

mod client;
mod error;
mod metadata;
mod urls;

pub use client::{Discovery, DiscoveryBuilder, ResourceDiscovery};
pub use error::{DiscoveryError, DiscoveryErrorKind};
pub use metadata::{AuthorizationServerMetadata, ProtectedResourceMetadata, MAX_METADATA_BYTES};
pub use urls::{protected_resource_urls, well_known_urls};
