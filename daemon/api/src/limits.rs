//! Middleware: per-client rate limit, request timeout, request metrics, the
//! admin bearer token.

use super::{ApiError, ApiState, RequestLabels, RouteLabels};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sibyl_util::TokenBucket;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Token buckets ([`sibyl_util::TokenBucket`]) per client IP.
pub struct RateLimiter {
    per_second: u32,
    burst: u32,
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
}

/// Clients tracked at most; beyond this, full buckets are forgotten.
const MAX_CLIENTS: usize = 10_000;

impl RateLimiter {
    /// `per_second` requests a second per client, up to `burst` at once;
    /// `per_second == 0` disables the limit.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second,
            burst,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Take one token for `ip`; `Err(seconds)` says when to retry.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        if self.per_second == 0 {
            return Ok(());
        }
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&ip) {
            buckets.retain(|_, bucket| !bucket.is_full(now));
        }
        let bucket = buckets.entry(ip).or_insert_with(|| {
            TokenBucket::new(u64::from(self.per_second), u64::from(self.burst), now)
        });
        if bucket.take(now) {
            return Ok(());
        }
        // Whole seconds (Retry-After), at least one.
        let wait = bucket.wait(1, now).unwrap_or(Duration::from_secs(1));
        Err(u64::try_from(wait.as_micros().div_ceil(1_000_000))
            .unwrap_or(u64::MAX)
            .max(1))
    }
}

pub(super) async fn rate_limit(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    match state.inner.rate.check(ip, Instant::now()) {
        Ok(()) => next.run(req).await,
        Err(retry_after) => {
            state.inner.metrics.rate_limited.inc();
            let mut resp = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests from {ip}; retry in {retry_after} s"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
    }
}

/// Answer 503 `request_timeout` when the handler has not answered within
/// `request_timeout`. A stream is bound only until its response starts.
pub(super) async fn request_timeout(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Response {
    let limit = state.inner.config.limits.request_timeout;
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            format!(
                "the node did not answer within {} ms; retry later",
                limit.as_millis()
            ),
        )
        .into_response(),
    }
}

/// Count and time every request by its route pattern (not its raw path, so
/// label values stay bounded).
pub(super) async fn track(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let start = Instant::now();
    let resp = next.run(req).await;
    let m = &state.inner.metrics;
    m.latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    m.requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// Middleware for state-changing routes: requires `Authorization: Bearer
/// <admin_token>`. Without a configured token the routes are disabled (403).
pub async fn require_admin(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    match admin_refusal(state.inner.config.admin_token.as_deref(), &req) {
        Some(refused) => refused,
        None => next.run(req).await,
    }
}

/// Why `req` may not use a state-changing route with admin token `token`
/// (`None`: it may).
pub fn admin_refusal(token: Option<&str>, req: &Request) -> Option<Response> {
    let Some(token) = token else {
        return Some(ApiError::new(
            StatusCode::FORBIDDEN,
            "admin_disabled",
            "state-changing routes are disabled: no admin token is configured (set `api.admin_token_file` in the node config)",
        )
        .into_response());
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if bool::from(g.as_bytes().ct_eq(token.as_bytes())) => None,
        Some(_) => Some(
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "bad_token",
                "the bearer token is not the node's admin token",
            )
            .into_response(),
        ),
        None => Some(
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "this route changes state and needs `Authorization: Bearer <admin token>`",
            )
            .into_response(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_the_configured_rate() {
        let rl = RateLimiter::new(10, 3);
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        let other: IpAddr = "127.0.0.2".parse().expect("ip");
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rl.check(ip, t0).is_ok());
        }
        assert_eq!(rl.check(ip, t0), Err(1));
        // Another client has its own bucket.
        assert!(rl.check(other, t0).is_ok());
        // 100 ms later one token is back.
        let t1 = t0 + Duration::from_millis(100);
        assert!(rl.check(ip, t1).is_ok());
        assert!(rl.check(ip, t1).is_err());
        // Disabled limiter never refuses.
        let off = RateLimiter::new(0, 0);
        for _ in 0..1000 {
            assert!(off.check(ip, t0).is_ok());
        }
    }
}
