//! Extractor wrappers whose rejections are [`ApiError`]s, so clients never see axum's plain-text errors.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::AppState;
use crate::net::{canonical, Cidr};

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
/// so only what trusted proxies appended is believed). An IPv6 address carrying an IPv4 address (a dual-stack
/// listener's `::ffff:a.b.c.d`) is its IPv4 address, so rules, limits and logs see one form.
pub(crate) fn client_ip(extensions: &Extensions, headers: &HeaderMap, trusted: &[Cidr]) -> Option<IpAddr> {
    let peer = extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| canonical(addr.ip()))?;
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer) {
        return Some(peer);
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in forwarded.iter().rev() {
        match hop.parse::<IpAddr>().map(canonical) {
            Ok(ip) if is_trusted(ip) => continue,
            Ok(ip) => return Some(ip),
            // A hop we cannot read: stop believing the header there.
            Err(_) => break,
        }
    }
    Some(peer)
}
