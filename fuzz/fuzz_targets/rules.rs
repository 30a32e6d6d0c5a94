//! The rules parser on arbitrary text, and the matcher with arbitrary claims and resources.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use syncgate::auth::Identity;
use syncgate::names::valid_name;
use syncgate::rules::{Action, RuleSet};

#[derive(Debug, Arbitrary)]
struct Input {
    rules_text: String,
    pattern: String,
    sub: String,
    org: String,
    resource: String,
}

fuzz_target!(|input: Input| {
    let _ = RuleSet::parse(&input.rules_text);
    let text = format!("[[rules]]\nroles=[\"u\"]\nresource={:?}\nactions=[\"read\"]\n", input.pattern);
    let Ok(rules) = RuleSet::parse(&text) else { return };
    let mut identity = Identity::new(input.sub.clone(), vec!["u".into()]);
    identity.claims.insert("orgId".into(), input.org.clone());
    let access = rules.specialise(&identity);
    let allowed = access.allows(Action::Read, &input.resource);
    // A claim with a separator or wildcard can never be the reason access is granted.
    if allowed && input.pattern.contains("{sub}") && input.sub.contains(['/', '*', '{', '}']) {
        panic!("crafted sub {:?} matched {:?} with {:?}", input.sub, input.resource, input.pattern);
    }
    let _ = valid_name(&input.resource);
    assert!(!access.allows(Action::Write, &input.resource), "a read-only rule allowed a write");
});
