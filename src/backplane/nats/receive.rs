//! What a node receives from NATS: connection events, subject messages
//! forwarded into the node's inbound queue, control messages (acknowledged
//! on the sender's reply subject) and announcements, each envelope opened and
//! checked first.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::{Client, Event};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{CONTROL_FRESHNESS, SEEN_CONTROL, SeenControl, Shared};
use crate::backplane::envelope::{Kind, Refused};
use crate::backplane::{ControlDelivery, Inbound, Subject, wire};

impl Shared {
    pub(super) fn on_event(&self, event: Event) {
        match event {
            Event::Connected => {
                self.connected.store(true, Ordering::Release);
                self.stats.connected.set(1);
                if self.ever_connected.swap(true, Ordering::AcqRel) {
                    info!("backplane reconnected: catching up from the store");
                    self.inlet.announce_loss();
                }
            }
            Event::Disconnected => {
                self.connected.store(false, Ordering::Release);
                self.stats.connected.set(0);
                warn!("backplane disconnected: serving local clients only until NATS is back");
            }
            Event::SlowConsumer(_) => {
                warn!("the backplane dropped messages for a slow subscription: catching up from the store");
                self.inlet.announce_loss();
            }
            Event::ServerError(e) => warn!(error = %e, "NATS server error"),
            Event::ClientError(e) => warn!(error = %e, "NATS client error"),
            Event::LameDuckMode | Event::Draining | Event::Closed => info!(%event, "NATS"),
        }
    }

    /// Counts a refused envelope and logs it at most once a minute.
    pub(super) fn refused(&self, subject: &str, why: Refused) {
        self.stats.rejected.inc();
        let mut last = self.last_refusal_log.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
            *last = Some(std::time::Instant::now());
            warn!(subject, reason = %why, "a backplane message was dropped (forged, or from a node with another --cluster-secret); further ones are counted in syncgate_backplane_rejected");
        }
    }

    /// Whether a control message from `origin` numbered `seq` is new (and remembers it).
    fn first_time(&self, origin: &str, seq: u64) -> bool {
        let mut seen = self.seen_control.lock().unwrap_or_else(|e| e.into_inner());
        let SeenControl { set, order } = &mut *seen;
        if !set.insert((origin.to_string(), seq)) {
            return false;
        }
        order.push_back((origin.to_string(), seq));
        if order.len() > SEEN_CONTROL
            && let Some(oldest) = order.pop_front()
        {
            set.remove(&oldest);
        }
        true
    }
}

fn fresh(sent_at: u64) -> bool {
    let window = u64::try_from(CONTROL_FRESHNESS.as_millis()).unwrap_or(u64::MAX);
    crate::clock::unix_ms().abs_diff(sent_at) <= window
}

/// Forwards one subject's messages into the node's inbound queue until stopped.
pub(super) async fn forward(
    shared: Arc<Shared>,
    mut subscriber: async_nats::Subscriber,
    subject: Subject,
    stop: CancellationToken,
) {
    let kind = match subject {
        Subject::Topic(_) => Kind::Topic,
        Subject::Changes(_) => Kind::Changes,
        Subject::Presence(_) => Kind::Presence,
    };
    loop {
        let message = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            message = subscriber.next() => match message { Some(message) => message, None => return },
        };
        let payload = match shared.sealer.open(message.subject.as_str(), &message.payload) {
            Ok(opened) if opened.kind == kind => {
                message.payload.slice(opened.body_at..opened.body_at + opened.body.len())
            }
            Ok(_) => {
                shared.refused(message.subject.as_str(), Refused::Malformed);
                continue;
            }
            Err(why) => {
                shared.refused(message.subject.as_str(), why);
                continue;
            }
        };
        if stop.is_cancelled() {
            break;
        }
        shared.inlet.offer(Inbound::Message { subject: subject.clone(), payload });
    }
    let _ = subscriber.unsubscribe().await;
}

/// Receives control messages (kind `Control`) or announcements for the node.
pub(super) async fn receive_cluster_messages(
    client: Client,
    shared: Arc<Shared>,
    mut subscriber: async_nats::Subscriber,
    expected: Kind,
    stop: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return,
            message = subscriber.next() => match message { Some(message) => message, None => return },
        };
        let subject = message.subject.as_str();
        let opened = match shared.sealer.open(subject, &message.payload) {
            Ok(opened) if opened.kind == expected && fresh(opened.sent_at) => opened,
            Ok(_) => {
                shared.refused(subject, Refused::Malformed);
                continue;
            }
            Err(why) => {
                shared.refused(subject, why);
                continue;
            }
        };
        if opened.origin == shared.node_id {
            continue;
        }
        match expected {
            Kind::Announcement => match wire::decode_announcement(opened.body) {
                Some(announcement) if announcement.node_id == opened.origin => {
                    shared.inlet.offer(Inbound::Announcement(announcement));
                }
                _ => shared.refused(subject, Refused::Malformed),
            },
            _ => {
                let Some(control) = wire::decode_control(opened.body) else {
                    shared.refused(subject, Refused::Malformed);
                    continue;
                };
                if !shared.first_time(opened.origin, opened.seq) {
                    continue;
                }
                let reply = message.reply.as_ref().map(|r| r.to_string()).filter(|r| {
                    r.strip_prefix(&shared.subjects.acks(opened.origin)).is_some_and(|rest| rest.starts_with('.'))
                });
                let (client, acker) = (client.clone(), shared.clone());
                let delivery = ControlDelivery::new(control, opened.origin.to_string(), move || {
                    let Some(reply) = reply else { return };
                    let seq = acker.seq.fetch_add(1, Ordering::Relaxed);
                    let ack =
                        acker.sealer.seal(&reply, Kind::ControlAck, crate::clock::unix_ms(), seq, &acker.node_id, &[]);
                    tokio::spawn(async move {
                        let _ = client.publish(reply, Bytes::from(ack)).await;
                    });
                });
                if shared.control.try_send(delivery).is_err() {
                    warn!("the control queue is full: a control message from another node was dropped");
                }
            }
        }
    }
}
