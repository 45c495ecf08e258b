//! The one way an HTTP client is built (model providers, GitHub,
//! notifications): TLS through rustls with ring, the crypto provider
//! async-nats uses, so the binaries hold one crypto stack.

use std::sync::Once;

/// A `reqwest` client builder with ring installed as the process's rustls
/// crypto provider (once; a provider installed earlier is kept).
pub fn client_builder() -> reqwest::ClientBuilder {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Err means a provider is already installed: that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
}

#[cfg(test)]
mod tests {
    #[test]
    fn builds_a_client_with_tls() {
        assert!(super::client_builder().build().is_ok());
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
