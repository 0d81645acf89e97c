//! Extractor wrappers whose rejections are [`ApiError`]s, so clients never see axum's plain-text errors.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::AppState;
use crate::net::Cidr;

/// A JSON body; malformed JSON is 400, a wrong field 422, a wrong content type 415, too large 413.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        axum::Json::<T>::from_request(req, state).await.map(|axum::Json(v)| Json(v)).map_err(ApiError::from)
    }
}

/// Query parameters; a wrong value is 422.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(ApiError::from)
    }
}

/// Path parameters.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(ApiError::from)
    }
}

/// The client's IP address, from the TCP connection (`None` when the server was not started with connect info).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(ClientIp(client_ip(&parts.extensions, &parts.headers, &state.trusted_proxies)))
    }
}

/// The context of an admin request: its caller (set by the admin middleware) and client address, at the service
/// clock's now.
#[derive(Debug, Clone)]
pub struct AdminContext(pub crate::service::Context);

impl FromRequestParts<AppState> for AdminContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = parts
            .extensions
            .get::<crate::service::Caller>()
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <admin token>` header"))?;
        let ip = client_ip(&parts.extensions, &parts.headers, &state.trusted_proxies);
        Ok(AdminContext(state.licensing.context_as(caller.actor, ip)))
    }
}

/// The client's address: the TCP peer, or, when the peer is a trusted proxy, the right-most address in
/// `X-Forwarded-For` that is not itself a trusted proxy (the left part of the header is whatever the client sent,
/// so only what trusted proxies appended is believed). An IPv4-mapped IPv6 address (a dual-stack listener's
/// `::ffff:a.b.c.d`) is its IPv4 address, so rules, limits and logs see one form.
pub(crate) fn client_ip(extensions: &Extensions, headers: &HeaderMap, trusted: &[Cidr]) -> Option<IpAddr> {
    let peer = extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip().to_canonical())?;
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    // Split as bytes: a byte the client wrote that is not text (left of what the proxies appended, on the same
    // line) must not hide the hops after it.
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(|hop| std::str::from_utf8(hop).map(str::trim))
        .collect::<Vec<_>>();
    for hop in forwarded.iter().rev() {
        match hop.as_ref().ok().and_then(|h| h.parse::<IpAddr>().ok()).map(|ip| ip.to_canonical()) {
            Some(ip) if is_trusted(ip) => continue,
            Some(ip) => return Some(ip),
            // A hop we cannot read: stop believing the header there.
            None => break,
        }
    }
    Some(peer)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use axum::http::HeaderValue;

    use super::*;

    fn ip_of(peer: &str, forwarded: &[&[u8]], trusted: &[&str]) -> Option<IpAddr> {
        let mut extensions = Extensions::new();
        extensions.insert(ConnectInfo(SocketAddr::new(peer.parse().unwrap(), 4000)));
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", HeaderValue::from_bytes(value).unwrap());
        }
        let trusted: Vec<Cidr> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        client_ip(&extensions, &headers, &trusted)
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_byte_that_is_not_text_does_not_hide_the_hops_a_proxy_appended() {
        let proxy = ["10.0.0.0/8"];
        assert_eq!(ip_of("10.0.0.5", &[b"\xff, 203.0.113.7"], &proxy), ip("203.0.113.7"));
        assert_eq!(
            ip_of("10.0.0.5", &[b"198.51.100.1", b"\xfe\xff, 203.0.113.7, 10.0.0.9"], &proxy),
            ip("203.0.113.7")
        );
        // An unreadable hop where the client's address should be: the header is believed no further.
        assert_eq!(ip_of("10.0.0.5", &[b"203.0.113.7, \xff"], &proxy), ip("10.0.0.5"));
        assert_eq!(ip_of("10.0.0.5", &[b"203.0.113.7, not-an-ip"], &proxy), ip("10.0.0.5"));
    }

    #[test]
    fn only_ipv4_mapped_addresses_are_judged_as_ipv4() {
        assert_eq!(ip_of("::ffff:192.0.2.1", &[], &[]), ip("192.0.2.1"));
        // A 6to4 peer does not own the IPv4 address it embeds: it is no trusted proxy, and stays IPv6.
        assert_eq!(ip_of("2002:a00:5::1", &[b"203.0.113.7"], &["10.0.0.5"]), ip("2002:a00:5::1"));
        assert_eq!(ip_of("::ffff:10.0.0.5", &[b"203.0.113.7"], &["10.0.0.5"]), ip("203.0.113.7"));
        assert_eq!(ip_of("10.0.0.5", &[b"::ffff:203.0.113.7"], &["10.0.0.5"]), ip("203.0.113.7"));
    }
}
