//! Reading the members' HTTP endpoints (metrics, status) from devnet code
//! and the tests that drive a devnet.

use anyhow::{Context, Result, anyhow, bail};
use std::time::Duration;

/// HTTP GET returning the body; any answer but 200 is an error.
///
/// Synchronous for the devnet's summary and the process tests. The request
/// runs on a thread of its own with its own runtime, so callers inside an
/// async context (whose runtime must not block) can use it too.
pub fn http_get(url: &str) -> Result<String> {
    std::thread::scope(|s| {
        s.spawn(|| get(url))
            .join()
            .map_err(|_| anyhow!("the request to {url} panicked"))?
    })
}

/// HTTP POST with an empty body and `Authorization: Bearer <token>`,
/// returning the body; any answer but 2xx is an error.
pub fn http_post(url: &str, token: &str) -> Result<String> {
    std::thread::scope(|s| {
        s.spawn(|| send(url, Some((token, String::new())), Duration::from_secs(5)))
            .join()
            .map_err(|_| anyhow!("the request to {url} panicked"))?
    })
}

/// HTTP POST of a JSON `body` with `Authorization: Bearer <token>`, waiting
/// up to `timeout` (+ 10 s) for the answer; any answer but 2xx is an error.
pub fn http_post_json(url: &str, token: &str, body: &str, timeout: Duration) -> Result<String> {
    std::thread::scope(|s| {
        s.spawn(|| {
            send(
                url,
                Some((token, body.to_string())),
                timeout + Duration::from_secs(10),
            )
        })
        .join()
        .map_err(|_| anyhow!("the request to {url} panicked"))?
    })
}

fn get(url: &str) -> Result<String> {
    send(url, None, Duration::from_secs(5))
}

/// GET `url`, or POST `body` (JSON when not empty) to it with `token` as the
/// bearer.
fn send(url: &str, post: Option<(&str, String)>, timeout: Duration) -> Result<String> {
    let token = post.as_ref().map(|(t, _)| *t);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime for an HTTP request")?;
    rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .context("cannot build an HTTP client")?;
        let request = match &post {
            Some((t, body)) if body.is_empty() => client.post(url).bearer_auth(t),
            Some((t, body)) => client
                .post(url)
                .bearer_auth(t)
                .header("content-type", "application/json")
                .body(body.clone()),
            None => client.get(url),
        };
        let resp = request
            .send()
            .await
            .with_context(|| format!("cannot connect to {url}"))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .with_context(|| format!("cannot read the answer of {url}"))?;
        let ok = match token {
            Some(_) => status.is_success(),
            None => status == reqwest::StatusCode::OK,
        };
        if !ok {
            bail!("{url} answered {}: {body}", status.as_u16());
        }
        Ok(body)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Serves one canned answer on a loopback port.
    fn serve_once(answer: &'static str) -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            s.write_all(answer.as_bytes()).unwrap();
        });
        format!("http://{addr}/metrics")
    }

    #[test]
    fn returns_the_body_of_a_chunked_200_and_refuses_a_404() {
        let url = serve_once(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        );
        assert_eq!(http_get(&url).unwrap(), "hello world");
        let url = serve_once("HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\n\r\nnope");
        let e = http_get(&url).unwrap_err().to_string();
        assert!(e.contains("answered 404: nope"), "{e}");
    }

    #[tokio::test]
    async fn works_from_inside_a_runtime() {
        let url = serve_once("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
        assert_eq!(http_get(&url).unwrap(), "ok");
    }
}
