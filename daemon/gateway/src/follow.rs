//! Following one member: catch up from its `/v1/reports` history, then read
//! its signed stream (`/v1/stream?signed=true`) from the newest round the
//! gateway holds (`Last-Event-ID`), and hand every report to the ingest
//! task, unverified. A session that ends (the member went away, a read
//! stalled for [`STALL`], a malformed answer) is retried with backoff; the
//! next session resumes from the gateway's newest round, so whatever the
//! member signed meanwhile comes back through its replay.

use crate::{MemberState, Received};
use serde::Deserialize;
use sibyl_aggregator::{Decode, Round, SignedReport};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// A stream with no bytes for this long (the member sends a keep-alive
/// comment every 15 s) is given up and reopened.
pub const STALL: Duration = Duration::from_secs(30);
/// Reports per catch-up page.
const PAGE: usize = 500;
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("cannot reach {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url} answered something that is not a page of reports: {why}")]
    BadPage { url: String, why: String },
    #[error("no bytes from {url} for {}s", STALL.as_secs())]
    Stalled { url: String },
    #[error("the gateway is shutting down")]
    Closed,
}

/// One member's follower, run until the ingest side goes away.
pub async fn follow(
    member: Arc<MemberState>,
    http: reqwest::Client,
    tx: mpsc::Sender<Received>,
    newest: watch::Receiver<Option<Round>>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        let got_before = member.received();
        match session(&member, &http, &tx, &newest).await {
            Err(FollowError::Closed) => return,
            Err(e) => {
                member.set_error(e.to_string());
                tracing::warn!(member = %member.url, error = %e, "following a member: session ended; retrying");
            }
            Ok(()) => {
                tracing::info!(member = %member.url, "member closed its stream; reconnecting");
            }
        }
        member.set_connected(false);
        if member.received() > got_before {
            backoff = BACKOFF_MIN;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[derive(Deserialize)]
struct ReportsPage {
    reports: Vec<ReportEntry>,
    next_after: Option<Round>,
}

#[derive(Deserialize)]
struct ReportEntry {
    report: serde_json::Value,
}

async fn send(
    tx: &mpsc::Sender<Received>,
    member: &Arc<MemberState>,
    report: Result<SignedReport, String>,
) -> Result<(), FollowError> {
    member.count_received();
    tx.send(Received {
        member: member.clone(),
        report,
    })
    .await
    .map_err(|_| FollowError::Closed)
}

async fn get(http: &reqwest::Client, url: &str) -> Result<reqwest::Response, FollowError> {
    let resp = http
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|source| FollowError::Http {
            url: url.to_owned(),
            source,
        })?;
    if !resp.status().is_success() {
        return Err(FollowError::Status {
            url: url.to_owned(),
            status: resp.status().as_u16(),
        });
    }
    Ok(resp)
}

/// Catch-up, then the live stream, until either ends.
async fn session(
    member: &Arc<MemberState>,
    http: &reqwest::Client,
    tx: &mpsc::Sender<Received>,
    newest: &watch::Receiver<Option<Round>>,
) -> Result<(), FollowError> {
    let base = member.url.trim_end_matches('/');
    // Catch-up: the member's stored reports after the newest we hold.
    // Nothing stored yet: from the member's first report (round 0 included).
    let start = *newest.borrow();
    let mut after = start.unwrap_or(0);
    let mut first_page = start.is_none();
    loop {
        let url = if first_page {
            format!("{base}/v1/reports?limit={PAGE}")
        } else {
            format!("{base}/v1/reports?after={after}&limit={PAGE}")
        };
        first_page = false;
        let resp = get(http, &url).await?;
        let bytes = resp.bytes().await.map_err(|source| FollowError::Http {
            url: url.clone(),
            source,
        })?;
        let page: ReportsPage =
            serde_json::from_slice(&bytes).map_err(|e| FollowError::BadPage {
                url: url.clone(),
                why: e.to_string(),
            })?;
        member.set_connected(true);
        for entry in page.reports {
            let report = serde_json::from_value::<SignedReport>(entry.report)
                .map_err(|e| format!("catch-up entry is not a signed report: {e}"));
            if let Ok(r) = &report {
                after = after.max(r.header.round);
            }
            send(tx, member, report).await?;
        }
        match page.next_after {
            Some(n) if n > after => after = n,
            Some(_) => {}
            None => break,
        }
    }
    // Live, resuming after what we hold now (the ingest may have moved on).
    let resume = newest.borrow().unwrap_or(0).max(after);
    let url = format!("{base}/v1/stream?signed=true");
    let mut resp = http
        .get(&url)
        .header("Last-Event-ID", resume.to_string())
        .header("Accept", "text/event-stream")
        .send()
        .await
        .map_err(|source| FollowError::Http {
            url: url.clone(),
            source,
        })?;
    if !resp.status().is_success() {
        return Err(FollowError::Status {
            url,
            status: resp.status().as_u16(),
        });
    }
    member.set_connected(true);
    let mut parser = SseParser::default();
    loop {
        let chunk = match tokio::time::timeout(STALL, resp.chunk()).await {
            Err(_) => return Err(FollowError::Stalled { url }),
            Ok(Err(source)) => return Err(FollowError::Http { url, source }),
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(c))) => c,
        };
        for event in parser.push(&chunk) {
            if event.kind != "report" {
                if event.kind == "lagged" {
                    tracing::info!(member = %member.url, data = %event.data, "member says this stream lagged");
                }
                continue;
            }
            send(tx, member, parse_event(&event.data)).await?;
        }
    }
}

/// A stream event's signed report (`signed_report`: wire encoding, hex).
fn parse_event(data: &str) -> Result<SignedReport, String> {
    #[derive(Deserialize)]
    struct Data {
        signed_report: String,
    }
    let d: Data = serde_json::from_str(data)
        .map_err(|e| format!("stream event without a signed report: {e}"))?;
    let bytes = hex::decode(d.signed_report.trim_start_matches("0x"))
        .map_err(|e| format!("signed_report is not hex: {e}"))?;
    SignedReport::from_bytes(&bytes).map_err(|e| format!("signed_report does not decode: {e}"))
}

/// One Server-Sent Event.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub kind: String,
    pub id: Option<String>,
    pub data: String,
}

/// Incremental `text/event-stream` parser (fields `event`, `id`, `data`;
/// comments and other fields ignored; `\n` or `\r\n` line ends).
#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
    current: SseEvent,
    has_data: bool,
}

/// Longest line kept while waiting for its end (a report of 1,000 feeds in
/// hex is ~400 KB).
const MAX_LINE: usize = 8 << 20;

impl SseParser {
    /// Feeds bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(pos) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos;
            let mut line = &self.buf[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            start = end + 1;
            if line.is_empty() {
                let ev = std::mem::take(&mut self.current);
                if self.has_data {
                    out.push(SseEvent {
                        kind: if ev.kind.is_empty() {
                            "message".into()
                        } else {
                            ev.kind
                        },
                        ..ev
                    });
                }
                self.has_data = false;
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "event" => self.current.kind = value.to_owned(),
                "id" => self.current.id = Some(value.to_owned()),
                "data" => {
                    if self.has_data {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_LINE {
            self.buf.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_splits_events_across_chunks_and_line_ends() {
        let mut p = SseParser::default();
        assert!(p.push(b": keep-alive\n\nevent: rep").is_empty());
        let evs = p.push(b"ort\r\nid: 7\r\ndata: {\"a\":1}\r\n\r\ndata: x\ndata: y\n\n");
        assert_eq!(
            evs,
            vec![
                SseEvent {
                    kind: "report".into(),
                    id: Some("7".into()),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    kind: "message".into(),
                    id: None,
                    data: "x\ny".into()
                },
            ]
        );
    }

    #[test]
    fn an_event_without_a_signed_report_is_refused_with_a_reason() {
        let e = parse_event("{\"round\": 3}").expect_err("no signed_report");
        assert!(e.contains("without a signed report"), "{e}");
        let e = parse_event("{\"signed_report\": \"zz\"}").expect_err("not hex");
        assert!(e.contains("not hex"), "{e}");
    }
}
