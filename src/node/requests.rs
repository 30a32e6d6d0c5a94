//! What an identity asks of the node's topics and collections: publish,
//! write, read a page. The WebSocket session checks its requests itself
//! (sans-IO, with the same [`crate::requests`] checks) and then calls the
//! delivering halves here ([`Node::deliver_publication`], [`Node::commit`]);
//! the HTTP API calls the checking wholes ([`Node::publish`], [`Node::write`],
//! [`Node::read_page`]).

use rmpv::Value;

use super::Node;
use crate::auth::Identity;
use crate::cursor::Cursor;
use crate::protocol::{OpOutcome, RawOp, Record, ServerMessage, encode_server};
use crate::requests::{Reading, RequestError, check_batch, check_op, check_publish, check_read};
use crate::rules::Access;

/// One op as the HTTP API takes it: the collection is in the path, and an
/// op without `hlc` is stamped by the server's clock.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiOp {
    /// The client's op id, echoed in its outcome.
    pub(crate) op_id: Value,
    /// Record key.
    pub(crate) key: String,
    /// The value; nil deletes.
    pub(crate) value: Value,
    /// The writer's timestamp, if it has one.
    pub(crate) hlc: Option<String>,
}

/// One page of a collection's records after a cursor.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Page {
    /// The records, in acceptance order.
    pub(crate) records: Vec<Record>,
    /// The cursor after them.
    pub(crate) cursor: String,
    /// More records follow the cursor.
    pub(crate) more: bool,
    /// The cursor could not be resumed from: this is the full state.
    pub(crate) reset: bool,
}

impl Node {
    /// Publishes `data` on `topic` as `identity`, if `access` allows it;
    /// returns how many of this node's subscribers were offered it.
    pub(crate) fn publish(
        &self,
        identity: &Identity,
        access: &Access,
        topic: &str,
        data: Value,
    ) -> Result<usize, RequestError> {
        check_publish(access, topic, &data, self.config.session.request_limits())?;
        Ok(self.deliver_publication(&identity.sub, topic, data))
    }

    /// Sends an authorised publication to the topic's subscribers, here and
    /// on the other nodes. Never waits.
    pub(crate) fn deliver_publication(&self, from: &str, topic: &str, data: Value) -> usize {
        let message = encode_server(&ServerMessage::Message { topic: topic.to_string(), data, from: from.to_string() });
        self.hub.publish(topic, message)
    }

    /// Writes `ops` into `collection` as `access` allows, one outcome per op
    /// in order: each op is accepted or refused on its own. An op without a
    /// timestamp is stamped now, after everything this server has seen.
    pub(crate) async fn write(
        &self,
        access: &Access,
        collection: &str,
        ops: Vec<ApiOp>,
    ) -> Result<Vec<OpOutcome>, RequestError> {
        let limits = self.config.session.request_limits();
        check_batch(ops.len(), limits)?;
        let now = crate::clock::unix_ms();
        let clock = self.collections.clock();
        let mut outcomes: Vec<Option<OpOutcome>> = Vec::with_capacity(ops.len());
        let mut allowed = Vec::with_capacity(ops.len());
        for op in ops {
            if let Err(rejection) = check_op(access, &op.op_id, collection, &op.value, limits) {
                outcomes.push(Some(rejection));
                continue;
            }
            let hlc = op.hlc.unwrap_or_else(|| clock.tick(now).to_string());
            allowed.push(RawOp {
                op_id: op.op_id,
                collection: collection.to_string(),
                key: op.key,
                value: op.value,
                hlc,
            });
            outcomes.push(None);
        }
        let mut committed = self.commit(allowed).await.into_iter();
        let outcomes: Vec<OpOutcome> = outcomes.into_iter().filter_map(|o| o.or_else(|| committed.next())).collect();
        for outcome in &outcomes {
            self.metrics.op(outcome.code.as_deref());
        }
        Ok(outcomes)
    }

    /// Commits authorised ops, one outcome per op in order (clock skew is
    /// judged against the wall clock, like the writers' stamps).
    pub(crate) async fn commit(&self, ops: Vec<RawOp>) -> Vec<OpOutcome> {
        if ops.is_empty() {
            return Vec::new();
        }
        self.collections.apply(ops, crate::clock::unix_ms()).await
    }

    /// One page of `collection` after `since`, if `access` may read it.
    pub(crate) async fn read_page(
        &self,
        access: &Access,
        collection: &str,
        since: Option<Cursor>,
    ) -> Result<Page, RequestError> {
        check_read(access, Reading::Records, collection)?;
        let snapshot = self
            .collections
            .snapshot(collection, since, self.config.limits.sync_page_bytes)
            .await
            .map_err(|e| RequestError::Unavailable(e.to_string()))?;
        let more = snapshot.pages.len() > 1;
        let (records, position) = snapshot.pages.into_iter().next().unwrap_or_default();
        Ok(Page {
            records,
            cursor: self.collections.cursor_under(position, snapshot.horizon),
            more,
            reset: snapshot.reset,
        })
    }
}
