//! Unit tests of the session state machine.

use super::*;
use crate::protocol::{OpInput, RawOp};
use crate::rules::RuleSet;
use rmpv::Value;

const RULES: &str = "[[rules]]\nroles=[\"user\"]\nresource=\"todos/{sub}/**\"\nactions=[\"read\",\"write\"]\n\
                     [[rules]]\nroles=[\"admin\"]\nresource=\"**\"\nactions=[\"read\",\"write\"]\n";

fn op(id: &str, collection: &str) -> OpInput {
    OpInput::Op(RawOp {
        op_id: Value::from(id),
        collection: collection.into(),
        key: "k".into(),
        value: Value::Nil,
        hlc: "1:0:n".into(),
    })
}

#[test]
fn requests_are_checked_against_the_rules() {
    let mut s = open_with(Policy::with_rules(RuleSet::parse(RULES).unwrap()));
    auth(&mut s, "alice", None);
    assert_eq!(
        s.on_message(Ok(ClientMessage::Sub { id: 1, topic: "todos/alice".into() }), T0),
        [Effect::Subscribe { id: 1, topic: "todos/alice".into() }]
    );
    let denied = s.on_message(Ok(ClientMessage::Sub { id: 2, topic: "todos/bob".into() }), T0);
    assert!(
        matches!(&denied[..], [Effect::Send(ServerMessage::Error { id: Some(2), code, .. })] if code == "forbidden")
    );
    let out = s.on_message(
        Ok(ClientMessage::OpBatch {
            id: 3,
            ops: vec![op("a", "todos/alice"), op("b", "todos/bob"), op("c", "todos/alice/x")],
        }),
        T0,
    );
    let [Effect::Write { id: 3, results, ops }] = &out[..] else { panic!("{out:?}") };
    assert_eq!(
        results.iter().map(|r| r.as_ref().map(|o| o.code.clone().unwrap())).collect::<Vec<_>>(),
        [None, Some("forbidden".into()), None]
    );
    assert_eq!(ops.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 2]);
    let out =
        s.on_message(Ok(ClientMessage::Sync { id: 4, collection: "todos/alice".into(), since: Some("x".into()) }), T0);
    assert!(matches!(&out[..], [Effect::Send(ServerMessage::Error { code, .. })] if code == "invalid"));
}

#[test]
fn losing_a_role_ends_subscriptions_but_not_the_connection() {
    let mut s = open_with(Policy::with_rules(RuleSet::parse(RULES).unwrap()));
    s.on_message(Ok(ClientMessage::Auth { token: Some("t".into()) }), T0);
    s.on_verified(Ok(Identity::new("alice", vec!["admin".into()])), T0);
    s.on_message(Ok(ClientMessage::Sub { id: 1, topic: "ops/alerts".into() }), T0);
    s.on_message(Ok(ClientMessage::Sync { id: 2, collection: "todos/alice".into(), since: None }), T0);
    s.on_message(Ok(ClientMessage::Auth { token: Some("t2".into()) }), T0);
    let out = s.on_verified(Ok(Identity::new("alice", vec!["user".into()])), T0);
    assert!(matches!(&out[0], Effect::Send(ServerMessage::AuthAck { .. })));
    assert_eq!(out[1], Effect::Unsubscribe { topic: "ops/alerts".into() });
    assert!(matches!(&out[2], Effect::Send(ServerMessage::Error { id: Some(1), code, .. }) if code == "forbidden"));
    assert_eq!(out.len(), 3, "the still-allowed sync stays");
    assert!(!s.is_closed());
    let out = s.on_policy(Arc::new(Policy::with_rules(RuleSet::parse("").unwrap())));
    assert_eq!(out[0], Effect::Unsync { collection: "todos/alice".into() });
    assert_eq!(s.synced().count(), 0);
}

#[test]
fn live_sessions_are_revalidated() {
    let config = SessionConfig { revalidate_every: Some(Duration::from_secs(30)), ..SessionConfig::default() };
    let (mut s, _) = Session::open(config, T0, Arc::new(Policy::allow_all()), None, None);
    auth(&mut s, "alice", None);
    s.on_activity(T0 + 29_000);
    assert!(!s.on_timer(T0 + 29_999).contains(&Effect::Verify("t".into())));
    assert_eq!(s.on_timer(T0 + 30_000), [Effect::Verify("t".into())]);
    let out = s.on_verified(Err(AuthError::new(AuthFailCode::IntrospectionUnavailable, "down")), T0 + 30_000);
    assert!(out.is_empty() && !s.is_closed(), "a provider outage keeps live sessions");
    s.on_activity(T0 + 59_000);
    assert_eq!(s.on_timer(T0 + 60_000), [Effect::Verify("t".into())]);
    assert!(
        s.on_verified(Ok(identity("alice", None)), T0 + 60_000).is_empty(),
        "no AUTH_ACK for a silent revalidation"
    );
    s.on_activity(T0 + 89_000);
    s.on_timer(T0 + 90_000);
    let out = s.on_verified(Err(AuthError::new(AuthFailCode::TokenInvalid, "inactive")), T0 + 90_000);
    assert_eq!(auth_fail_code(&out).as_deref(), Some("forbidden"));
    assert_eq!(close_code(&out), Some(4003));
}

#[test]
fn floods_are_answered_then_closed() {
    let config = SessionConfig { messages_per_second: 10, message_burst: 5, ..SessionConfig::default() };
    let (mut s, _) = Session::open(config, T0, Arc::new(Policy::allow_all()), None, None);
    let ping = |s: &mut Session, at| s.on_message(Ok(ClientMessage::Ping { id: Some(1) }), at);
    for _ in 0..5 {
        assert_eq!(ping(&mut s, T0), [Effect::Send(ServerMessage::Pong { id: Some(1) })]);
    }
    assert!(
        matches!(&ping(&mut s, T0)[..], [Effect::Send(ServerMessage::Error { code, .. })] if code == "rate_limited")
    );
    assert_eq!(ping(&mut s, T0 + 1000).len(), 1, "the bucket refills with time");
    let mut closed = None;
    for _ in 0..20 {
        closed = close_code(&ping(&mut s, T0 + 1000)).or(closed);
    }
    assert_eq!(closed, Some(4029));
}

#[test]
fn subscription_limit() {
    let (mut s, _) = Session::open(
        SessionConfig { max_subscriptions: 1, ..SessionConfig::default() },
        T0,
        Arc::new(Policy::allow_all()),
        None,
        None,
    );
    auth(&mut s, "alice", None);
    s.on_message(Ok(ClientMessage::Sub { id: 1, topic: "a".into() }), T0);
    let out = s.on_message(Ok(ClientMessage::Sub { id: 2, topic: "b".into() }), T0);
    assert!(matches!(&out[..], [Effect::Send(ServerMessage::Error { code, .. })] if code == "too_many_subscriptions"));
    assert_eq!(
        s.on_message(Ok(ClientMessage::Sub { id: 3, topic: "a".into() }), T0),
        [Effect::Subscribe { id: 3, topic: "a".into() }]
    );
}

const T0: u64 = 1_800_000_000_000;

fn identity(sub: &str, exp_secs: Option<u64>) -> Identity {
    Identity { expires_at: exp_secs, ..Identity::new(sub, vec!["user".into()]) }
}

fn open() -> Session {
    open_with(Policy::allow_all())
}

fn open_with(policy: Policy) -> Session {
    let (s, out) = Session::open(SessionConfig::default(), T0, Arc::new(policy), None, None);
    assert_eq!(out, [Effect::Send(ServerMessage::AuthRequired { protocol_version: 1 })]);
    s
}

fn auth(s: &mut Session, sub: &str, exp: Option<u64>) -> Vec<Effect> {
    let out = s.on_message(Ok(ClientMessage::Auth { token: Some("t".into()) }), T0);
    assert_eq!(out, [Effect::Verify("t".into())]);
    s.on_verified(Ok(identity(sub, exp)), T0)
}

fn close_code(out: &[Effect]) -> Option<u16> {
    out.iter().find_map(|e| match e {
        Effect::Close { code, .. } => Some(*code),
        _ => None,
    })
}

fn auth_fail_code(out: &[Effect]) -> Option<String> {
    out.iter().find_map(|e| match e {
        Effect::Send(ServerMessage::AuthFail { code, .. }) => Some(code.clone()),
        _ => None,
    })
}

#[test]
fn nothing_but_auth_and_ping_before_ack() {
    let mut s = open();
    assert_eq!(
        s.on_message(Ok(ClientMessage::Ping { id: Some(1) }), T0),
        [Effect::Send(ServerMessage::Pong { id: Some(1) })]
    );
    let out = s.on_message(Ok(ClientMessage::Sub { id: 1, topic: "t".into() }), T0);
    assert_eq!(auth_fail_code(&out).as_deref(), Some("not_authenticated"));
    assert_eq!(close_code(&out), Some(4001));
    assert!(s.is_closed());
    assert!(s.on_message(Ok(ClientMessage::Ping { id: None }), T0).is_empty());
}

#[test]
fn unknown_type_before_auth_is_not_authenticated_and_garbage_is_4000() {
    let mut s = open();
    let out = s.on_message(Err(DecodeError::UnknownType { type_name: "X".into(), id: None }), T0);
    assert_eq!(close_code(&out), Some(4001));
    let mut s = open();
    assert_eq!(close_code(&s.on_message(Err(DecodeError::Malformed("x".into())), T0)), Some(4000));
}

#[test]
fn auth_timeout_closes_with_4008() {
    let mut s = open();
    assert_eq!(s.next_deadline(), Some(T0 + 10_000));
    assert!(s.on_timer(T0 + 9_999).is_empty());
    assert_eq!(close_code(&s.on_timer(T0 + 10_000)), Some(4008));
}

#[test]
fn failures_carry_their_close_codes() {
    for (code, close) in
        [(AuthFailCode::TokenExpired, 4100), (AuthFailCode::Forbidden, 4003), (AuthFailCode::TokenInvalid, 4001)]
    {
        let mut s = open();
        s.on_message(Ok(ClientMessage::Auth { token: Some("t".into()) }), T0);
        let out = s.on_verified(Err(AuthError::new(code, "x")), T0);
        assert_eq!(auth_fail_code(&out).as_deref(), Some(code.as_str()));
        assert_eq!(close_code(&out), Some(close));
    }
    let mut s = open();
    let out = s.on_message(Ok(ClientMessage::Auth { token: None }), T0);
    assert_eq!(auth_fail_code(&out).as_deref(), Some("token_missing"));
}

#[test]
fn expiry_notice_then_4100_unless_refreshed() {
    let exp = T0 / 1000 + 60;
    let mut s = open();
    let out = auth(&mut s, "alice", Some(exp));
    assert!(matches!(&out[0], Effect::Send(ServerMessage::AuthAck { expires_at: Some(e), .. }) if *e == exp));
    assert_eq!(s.next_deadline(), Some(T0 + 20_000), "first ping comes before the notice");
    s.on_activity(T0 + 29_000);
    let out = s.on_timer(T0 + 30_000);
    assert!(out.contains(&Effect::Send(ServerMessage::TokenExpiring { expires_at: exp })));
    s.on_activity(T0 + 59_000);
    assert_eq!(close_code(&s.on_timer(T0 + 60_000)), Some(4100));
}

#[test]
fn messages_after_the_deadline_are_refused_without_a_timer() {
    let exp = T0 / 1000 + 60;
    let mut s = open();
    auth(&mut s, "alice", Some(exp));
    let late = s.on_message(Ok(ClientMessage::Sub { id: 1, topic: "t".into() }), T0 + 60_000);
    assert_eq!(late.len(), 1, "nothing is routed: {late:?}");
    assert_eq!(close_code(&late), Some(4100));
    let mut s = open();
    let late = s.on_message(Ok(ClientMessage::Auth { token: Some("t".into()) }), T0 + 10_000);
    assert_eq!(close_code(&late), Some(4008), "an AUTH after the auth timeout is not verified");
}

#[test]
fn refresh_extends_same_subject_and_refuses_another() {
    let exp = T0 / 1000 + 60;
    let mut s = open();
    auth(&mut s, "alice", Some(exp));
    s.on_message(Ok(ClientMessage::Auth { token: Some("t2".into()) }), T0 + 1000);
    let out = s.on_verified(Ok(identity("alice", Some(exp + 3600))), T0 + 1000);
    assert!(matches!(&out[0], Effect::Send(ServerMessage::AuthAck { .. })));
    s.on_activity(T0 + 59_000);
    assert!(close_code(&s.on_timer(T0 + 60_000)).is_none(), "refreshed session outlives the first token");

    s.on_message(Ok(ClientMessage::Auth { token: Some("t3".into()) }), T0 + 61_000);
    let out = s.on_verified(Ok(identity("mallory", Some(exp + 3600))), T0 + 61_000);
    assert_eq!(auth_fail_code(&out).as_deref(), Some("forbidden"));
    assert_eq!(close_code(&out), Some(4003));
}

#[test]
fn invalid_refresh_ends_the_session() {
    let mut s = open();
    auth(&mut s, "alice", None);
    s.on_message(Ok(ClientMessage::Auth { token: Some("bad".into()) }), T0);
    let out = s.on_verified(Err(AuthError::new(AuthFailCode::TokenInvalid, "x")), T0);
    assert_eq!(close_code(&out), Some(4001));
}

#[test]
fn authenticated_errors_are_answered_and_requests_routed() {
    let mut s = open();
    auth(&mut s, "alice", None);
    let out = s.on_message(Err(DecodeError::UnknownType { type_name: "X".into(), id: Some(4) }), T0);
    assert!(matches!(&out[0], Effect::Send(ServerMessage::Error { id: Some(4), code, .. }) if code == "unknown_type"));
    let batch = ClientMessage::OpBatch { id: 1, ops: vec![OpInput::Invalid { op_id: Value::Nil, reason: "x".into() }] };
    assert!(
        matches!(&s.on_message(Ok(batch), T0)[..], [Effect::Send(ServerMessage::OpResult { id: 1, results })] if !results[0].ok)
    );
    let sub = s.on_message(Ok(ClientMessage::Sub { id: 2, topic: "t".into() }), T0);
    assert_eq!(sub, [Effect::Subscribe { id: 2, topic: "t".into() }]);
}

#[test]
fn mode_none_and_query_tokens_skip_auth_required() {
    let anonymous = Some(Identity::new("anonymous", vec![]));
    let (s, out) = Session::open(SessionConfig::default(), T0, Arc::new(Policy::allow_all()), anonymous, None);
    assert!(matches!(&out[0], Effect::Send(ServerMessage::AuthAck { sub, .. }) if sub == "anonymous"));
    assert!(s.identity().is_some());
    let (_, out) = Session::open(SessionConfig::default(), T0, Arc::new(Policy::allow_all()), None, Some("tok".into()));
    assert_eq!(out, [Effect::Verify("tok".into())]);
}

#[test]
fn silent_peers_are_pinged_then_closed() {
    let mut s = open();
    auth(&mut s, "alice", None);
    assert_eq!(s.on_timer(T0 + 20_000), [Effect::Ping]);
    assert_eq!(s.on_timer(T0 + 40_000), [Effect::Ping]);
    assert_eq!(close_code(&s.on_timer(T0 + 60_000)), Some(1001));
}
