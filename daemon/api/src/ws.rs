//! `GET /v1/ws`: the report stream over a WebSocket, with subscriptions per
//! feed.
//!
//! Client → server (text frames, JSON):
//! `{"op":"subscribe","feeds":["BTC-USD"],"after_round":123}` (`"*"` = every
//! feed; `after_round`, optional, replays the stored reports after that round
//! first, as `Last-Event-ID` does on `/v1/stream`, and counts only before
//! the first report was sent), `{"op":"unsubscribe","feeds":["BTC-USD"]}`,
//! `{"op":"ping"}`.
//!
//! Server → client: `{"type":"subscribed","feeds":[…]}`,
//! `{"type":"unsubscribed","feeds":[…]}`, `{"type":"pong"}`,
//! `{"type":"report","round":…,"timestamp_ms":…,"leaves":[…]}` (only the
//! subscribed feeds' leaves; each round once, in order),
//! `{"type":"error","code":…,"message":…}`, and for a client that let its
//! queue of `stream_queue` messages fill: `{"type":"lagged",…}` then a close
//! frame with code 4008; it resumes with `after_round` = the last round it got.
//! A WebSocket takes a stream slot (`max_streams`, `max_streams_per_client`).

use super::handlers::{LAGGED_GRACE, Params, feed_filter, params, replay_into, report_body};
use super::server::ConnHandle;
use super::{ApiError, ApiState};
use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use sibyl_aggregator::{FeedId, Round, SignedReport};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};

/// Close code sent after `lagged` (application range 4000-4999).
pub const CLOSE_LAGGED: u16 = 4008;

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Command {
    Subscribe {
        feeds: Vec<String>,
        #[serde(default)]
        after_round: Option<Round>,
    },
    Unsubscribe {
        feeds: Vec<String>,
    },
    Ping,
}

pub(super) async fn upgrade(
    State(st): State<ApiState>,
    conn: Option<Extension<ConnHandle>>,
    q: Result<Query<Params>, QueryRejection>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    params(q, &[])?;
    let ip = conn
        .as_ref()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.peer.ip());
    let slot = super::handlers::StreamSlot::take(&st, ip)?;
    let sub = st.inner.reports.subscribe();
    Ok(ws.on_upgrade(move |socket| async move {
        let _slot = slot;
        run(socket, st, sub).await;
    }))
}

/// What the connection has asked for.
struct Subscription {
    all: bool,
    feeds: BTreeSet<FeedId>,
}

impl Subscription {
    fn filter(&self) -> Option<BTreeSet<FeedId>> {
        (!self.all).then(|| self.feeds.clone())
    }
    fn any(&self) -> bool {
        self.all || !self.feeds.is_empty()
    }
}

fn text(v: &Value) -> Message {
    Message::Text(v.to_string().into())
}

fn report_message(report: &SignedReport, filter: Option<&BTreeSet<FeedId>>) -> Option<Message> {
    let mut body = report_body(report, filter, false)?;
    if let Some(obj) = body.as_object_mut() {
        obj.insert("type".into(), Value::String("report".into()));
    }
    Some(text(&body))
}

async fn run(socket: WebSocket, st: ApiState, mut sub: broadcast::Receiver<Arc<SignedReport>>) {
    let (mut sink, mut incoming) = socket.split();
    let queue = st.inner.config.limits.stream_queue.max(1);
    let (tx, mut rx) = mpsc::channel::<Option<Message>>(queue);
    // The writer drains the queue; `None` in it means "lagged: close".
    let writer = tokio::spawn(async move {
        while let Some(item) = rx.recv().await {
            let Some(msg) = item else {
                let _ = sink.send(text(&lagged_body())).await;
                let _ = sink
                    .send(Message::Close(Some(CloseFrame {
                        code: CLOSE_LAGGED,
                        reason: "lagged".into(),
                    })))
                    .await;
                return;
            };
            if sink.send(msg).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    let mut subs = Subscription {
        all: false,
        feeds: BTreeSet::new(),
    };
    let mut last: Option<Round> = None;
    loop {
        tokio::select! {
            msg = incoming.next() => {
                let Some(Ok(msg)) = msg else { break };
                let text = match msg {
                    Message::Text(t) => t.to_string(),
                    Message::Close(_) => break,
                    _ => continue,
                };
                if !on_command(&st, &tx, &mut subs, &mut last, &text).await {
                    break;
                }
            }
            r = sub.recv() => {
                let report = match r {
                    Ok(report) => report,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Overran by the broadcast: fill from the store.
                        let Some(after) = last else { continue };
                        let filter = subs.filter();
                        match replay_into(&st, &tx, filter.as_ref(), after, |r| report_message(&r, filter.as_ref())).await {
                            Some(l) => last = Some(l),
                            None => break,
                        }
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                };
                let round = report.header.round;
                if last.is_some_and(|l| round <= l) || !subs.any() {
                    continue;
                }
                last = Some(round);
                let Some(msg) = report_message(&report, subs.filter().as_ref()) else { continue };
                match tx.try_send(Some(msg)) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        st.inner.metrics.streams_lagged.inc();
                        // Room for the marker once the writer drains one message,
                        // or give up after the grace period.
                        let _ = tokio::time::timeout(LAGGED_GRACE, tx.send(None)).await;
                        break;
                    }
                }
            }
        }
    }
    drop(tx);
    let _ = tokio::time::timeout(LAGGED_GRACE, writer).await;
}

fn lagged_body() -> Value {
    json!({
        "type": "lagged",
        "message": "this client read too slowly and the connection ends here; reconnect and subscribe with `after_round` = the last round received to resume without a gap",
    })
}

/// Handles one client message; `false` ends the connection.
async fn on_command(
    st: &ApiState,
    tx: &mpsc::Sender<Option<Message>>,
    subs: &mut Subscription,
    last: &mut Option<Round>,
    text_in: &str,
) -> bool {
    let reply = |v: Value| tx.send(Some(text(&v)));
    let cmd: Command = match serde_json::from_str(text_in) {
        Ok(c) => c,
        Err(e) => {
            return reply(json!({"type": "error", "code": "bad_json", "message": format!("expected {{\"op\": \"subscribe\"|\"unsubscribe\"|\"ping\", ...}}: {e}")})).await.is_ok();
        }
    };
    match cmd {
        Command::Ping => reply(json!({"type": "pong"})).await.is_ok(),
        Command::Unsubscribe { feeds } => {
            if feeds.iter().any(|f| f == "*") {
                subs.all = false;
                subs.feeds.clear();
            } else {
                for f in &feeds {
                    if let Ok(id) = FeedId::new(f) {
                        subs.feeds.remove(&id);
                    }
                }
            }
            reply(json!({"type": "unsubscribed", "feeds": feeds}))
                .await
                .is_ok()
        }
        Command::Subscribe { feeds, after_round } => {
            if feeds.iter().any(|f| f == "*") {
                subs.all = true;
            } else {
                let list = feeds.join(",");
                match feed_filter(st, Some(&list)).await {
                    Ok(Some(set)) => subs.feeds.extend(set),
                    Ok(None) => {}
                    Err(e) => {
                        return reply(
                            json!({"type": "error", "code": e.code, "message": e.message}),
                        )
                        .await
                        .is_ok();
                    }
                }
            }
            if reply(json!({"type": "subscribed", "feeds": feeds}))
                .await
                .is_err()
            {
                return false;
            }
            if let (Some(after), None) = (after_round, *last) {
                let filter = subs.filter();
                match replay_into(st, tx, filter.as_ref(), after, |r| {
                    report_message(&r, filter.as_ref())
                })
                .await
                {
                    Some(l) => *last = Some(l),
                    None => return false,
                }
            }
            true
        }
    }
}
