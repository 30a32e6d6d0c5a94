//! Arbitrary client messages, verification results and clock advances driven
//! through the sans-IO session, checking its invariants.
#![no_main]

use std::sync::Arc;
use std::time::Duration;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use syncgate::auth::{AuthError, Identity};
use syncgate::protocol::{AuthFailCode, DecodeLimits, ServerMessage, decode_client};
use syncgate::rules::{Policy, RuleSet};
use syncgate::session::{Effect, Session, SessionConfig};

#[derive(Debug, Arbitrary)]
enum Step {
    /// Raw bytes as if they were a binary message.
    Bytes(Vec<u8>),
    /// Advance the clock by this many milliseconds and fire timers.
    Advance(u16),
    /// Activity without a message.
    Activity,
    /// A rules reload.
    Reload(bool),
}

#[derive(Debug, Arbitrary)]
struct Script {
    query_token: bool,
    anonymous: bool,
    verify_ok: Vec<bool>,
    expires_in_secs: Option<u8>,
    steps: Vec<Step>,
}

const DOCUMENTED: [u16; 11] = [1000, 1001, 1002, 1009, 4000, 4001, 4003, 4008, 4029, 4100, 4200];

fuzz_target!(|script: Script| {
    let config = SessionConfig { revalidate_every: Some(Duration::from_secs(5)), max_subscriptions: 4, ..SessionConfig::default() };
    let rules = RuleSet::parse("[[rules]]\nroles=[\"user\"]\nresource=\"u/{sub}/**\"\nactions=[\"read\",\"write\"]\n").unwrap();
    let mut now = 1_800_000_000_000u64;
    let anonymous = script.anonymous.then(|| Identity::new("anonymous", vec![]));
    let token = script.query_token.then(|| "t".to_string());
    let (mut session, mut effects) = Session::open(config, now, Arc::new(Policy::with_rules(rules.clone())), anonymous, token);
    let mut verdicts = script.verify_ok.into_iter().cycle();
    let mut authenticated_once = session.identity().is_some();
    for step in script.steps.into_iter().take(64) {
        // Carry out verifications the way the driver does.
        let mut guard = 0;
        while let Some(i) = effects.iter().position(|e| matches!(e, Effect::Verify(_))) {
            guard += 1;
            assert!(guard < 8, "verification loop");
            effects.remove(i);
            let ok = verdicts.next().unwrap_or(true);
            let result = if ok {
                let mut id = Identity::new("alice", vec!["user".into()]);
                id.expires_at = script.expires_in_secs.map(|s| now / 1000 + u64::from(s));
                Ok(id)
            } else {
                Err(AuthError::new(AuthFailCode::TokenInvalid, "no"))
            };
            effects.extend(session.on_verified(result, now));
        }
        for effect in &effects {
            match effect {
                Effect::Close { code, .. } => assert!(DOCUMENTED.contains(code), "undocumented close code {code}"),
                Effect::Send(ServerMessage::AuthAck { .. }) => authenticated_once = true,
                Effect::Subscribe { .. } | Effect::Publish { .. } | Effect::Write { .. } | Effect::Sync { .. } => {
                    assert!(session.identity().is_some(), "a request was routed without an identity");
                }
                _ => {}
            }
        }
        if session.is_closed() {
            break;
        }
        effects = match step {
            Step::Bytes(bytes) => session.on_message(decode_client(&bytes, DecodeLimits::default()), now),
            Step::Advance(ms) => {
                now += u64::from(ms);
                session.on_timer(now)
            }
            Step::Activity => {
                session.on_activity(now);
                Vec::new()
            }
            Step::Reload(empty) => {
                let policy = if empty { Policy::with_rules(RuleSet::default()) } else { Policy::with_rules(rules.clone()) };
                session.on_policy(Arc::new(policy))
            }
        };
        assert!(session.topics().count() + session.synced().count() <= 4, "subscription limit");
        if let Some(deadline) = session.next_deadline() {
            assert!(deadline >= now.saturating_sub(60_000 * 60 * 24), "deadline in the distant past");
        }
    }
    let _ = authenticated_once;
});
