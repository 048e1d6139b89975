//! What a client's TLS handshake settled that the origin may want to know: the server name
//! the client asked for (SNI) and the protocol version agreed. Captured once per connection,
//! when the handshake is done ([`crate::client::ClientIo::new`]), and sent on with each of its
//! requests in the fields that `tls-sni-header` and `tls-protocol-header` name
//! ([`crate::http::forward::Vouched`]).

use rustls::ProtocolVersion;
use rustls::server::ServerConnection;

/// The TLS facts of one client connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFacts {
    /// The server name the client sent (SNI): a DNS name in lower case (rustls checks it and
    /// folds its case), so it is safe in a field value; `None` when the client sent none
    /// (clients that connect to an IP address do not).
    pub sni: Option<Box<str>>,
    /// The version agreed, as nginx's `$ssl_protocol` writes it ([`protocol_name`]).
    pub protocol: Option<&'static str>,
}

impl TlsFacts {
    /// The facts of `conn`, a connection whose handshake is done.
    pub fn of(conn: &ServerConnection) -> Self {
        Self {
            sni: conn.server_name().map(Box::from),
            protocol: protocol_name(conn.protocol_version()),
        }
    }
}

/// The name of a TLS version as nginx's `$ssl_protocol` writes it, `TLSv1.2` or `TLSv1.3`
/// (also the `protocol` label of the TLS metrics); `None` for anything else (the sidecar
/// speaks only these two, and a connection whose handshake is not done has none).
pub fn protocol_name(version: Option<ProtocolVersion>) -> Option<&'static str> {
    match version {
        Some(ProtocolVersion::TLSv1_3) => Some("TLSv1.3"),
        Some(ProtocolVersion::TLSv1_2) => Some("TLSv1.2"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names_are_nginx_spellings() {
        assert_eq!(
            protocol_name(Some(ProtocolVersion::TLSv1_3)),
            Some("TLSv1.3")
        );
        assert_eq!(
            protocol_name(Some(ProtocolVersion::TLSv1_2)),
            Some("TLSv1.2")
        );
        assert_eq!(protocol_name(Some(ProtocolVersion::TLSv1_1)), None);
        assert_eq!(protocol_name(None), None);
    }
}
