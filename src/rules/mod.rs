//! RBAC pattern rules: who may read or write which topics and collections.
//!
//! Rules are parsed and validated once ([`RuleSet::parse`]), specialised for
//! one identity at authentication ([`RuleSet::specialise`] substitutes
//! `{claim}`s and drops rules for other roles), and checked on every request
//! with [`Access::allows`], which does not allocate.
//!
//! A substituted claim fills exactly one segment: a value that is empty or
//! contains `/`, `*`, `{` or `}`, or is `.` or `..`, makes the rule match nothing, so a crafted
//! `sub` can never widen access. Deny wins; with rules, anything not allowed
//! is denied.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::auth::Identity;

mod policy;

pub use policy::{Policy, PolicyHandle};

/// What a request does to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// `SUB`, `SYNC`.
    Read,
    /// `PUB`, each op of `OP_BATCH`.
    Write,
}

impl Action {
    fn bit(self) -> u8 {
        match self {
            Action::Read => 1,
            Action::Write => 2,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Read => "read",
            Action::Write => "write",
        })
    }
}

/// A rules file that cannot be used; the message names the rule and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RulesError(String);

/// One segment of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**`: zero or more segments.
    Many,
    /// `{claim}`: one segment equal to the claim's value.
    Claim(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Roles {
    /// `"*"`: any authenticated identity.
    Any,
    Listed(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    roles: Roles,
    pattern: Vec<Segment>,
    actions: u8,
    deny: bool,
}

/// A validated, compiled rules file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default)]
    rules: Vec<RuleSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    roles: Vec<String>,
    resource: String,
    actions: Vec<String>,
    #[serde(default)]
    effect: Option<String>,
}

impl RuleSet {
    /// Reads and validates a rules file.
    pub fn load(path: &Path) -> Result<Self, RulesError> {
        let text = std::fs::read_to_string(path).map_err(|e| RulesError(format!("--rules {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|RulesError(e)| RulesError(format!("--rules {}: {e}", path.display())))
    }

    /// Parses and validates rules from TOML text.
    pub fn parse(text: &str) -> Result<Self, RulesError> {
        let spec: FileSpec = toml::from_str(text)
            .map_err(|e| RulesError(e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")))?;
        let rules = spec
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| compile(r).map_err(|e| RulesError(format!("rule {}: {e}", i + 1))))
            .collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules (everything is denied).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules that apply to `identity`, with its claims substituted.
    pub fn specialise(&self, identity: &Identity) -> Access {
        let rules = self
            .rules
            .iter()
            .filter(|rule| match &rule.roles {
                Roles::Any => true,
                Roles::Listed(roles) => roles.iter().any(|r| identity.roles.contains(r)),
            })
            .filter_map(|rule| {
                let pattern = rule.pattern.iter().map(|seg| substitute(seg, identity)).collect::<Option<Vec<_>>>()?;
                Some(Grant { pattern, actions: rule.actions, deny: rule.deny })
            })
            .collect();
        Access { grants: Some(Grants::index(rules)) }
    }
}

fn compile(spec: RuleSpec) -> Result<Rule, String> {
    if spec.roles.is_empty() {
        return Err("`roles` is empty (use [\"*\"] for any authenticated identity)".into());
    }
    let roles = if spec.roles.iter().any(|r| r == "*") { Roles::Any } else { Roles::Listed(spec.roles) };
    let mut actions = 0;
    if spec.actions.is_empty() {
        return Err("`actions` is empty".into());
    }
    for action in &spec.actions {
        actions |= match action.as_str() {
            "read" => Action::Read.bit(),
            "write" => Action::Write.bit(),
            other => return Err(format!("unknown action {other:?} (expected \"read\" or \"write\")")),
        };
    }
    let deny = match spec.effect.as_deref() {
        None | Some("allow") => false,
        Some("deny") => true,
        Some(other) => return Err(format!("unknown effect {other:?} (expected \"allow\" or \"deny\")")),
    };
    let pattern = compile_pattern(&spec.resource).map_err(|e| format!("resource {:?}: {e}", spec.resource))?;
    Ok(Rule { roles, pattern, actions, deny })
}

fn compile_pattern(resource: &str) -> Result<Vec<Segment>, String> {
    if resource.is_empty() {
        return Err("empty pattern".into());
    }
    resource
        .split('/')
        .map(|seg| match seg {
            "" => Err("empty segment".to_string()),
            "*" => Ok(Segment::One),
            "**" => Ok(Segment::Many),
            _ if seg.starts_with('{') && seg.ends_with('}') => {
                let name = &seg[1..seg.len() - 1];
                if name.is_empty()
                    || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
                {
                    Err(format!("bad claim name in {seg:?}"))
                } else {
                    Ok(Segment::Claim(name.to_string()))
                }
            }
            _ if seg.contains(['*', '{', '}']) => {
                Err(format!("{seg:?}: '*', '**' and '{{claim}}' must be whole segments"))
            }
            _ => Ok(Segment::Literal(seg.to_string())),
        })
        .collect()
}

fn substitute(segment: &Segment, identity: &Identity) -> Option<Seg> {
    Some(match segment {
        Segment::Literal(s) => Seg::Literal(s.clone()),
        Segment::One => Seg::One,
        Segment::Many => Seg::Many,
        Segment::Claim(name) => {
            let value = match name.as_str() {
                "sub" => Some(&identity.sub),
                // The verifying issuer binding's name, when the issuers are bound.
                "iss" => identity.issuer.as_ref().or_else(|| identity.claims.get(name)),
                _ => identity.claims.get(name),
            }?;
            if value.is_empty() || value.contains(['/', '*', '{', '}']) || value == "." || value == ".." {
                return None;
            }
            Seg::Literal(value.clone())
        }
    })
}

/// A segment of a specialised pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Literal(String),
    One,
    Many,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    pattern: Vec<Seg>,
    actions: u8,
    deny: bool,
}

/// One identity's grants, indexed by their first segment: a check looks only
/// at the grants that can match the resource's first segment (and those that
/// start with a wildcard), so it stays fast with many rules.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grants {
    all: Vec<Grant>,
    /// First literal segment → indexes into `all`.
    by_first: BTreeMap<String, Vec<usize>>,
    /// Grants whose pattern starts with `*` or `**`.
    wild: Vec<usize>,
}

impl Grants {
    fn index(all: Vec<Grant>) -> Self {
        let (mut by_first, mut wild) = (BTreeMap::<String, Vec<usize>>::new(), Vec::new());
        for (n, grant) in all.iter().enumerate() {
            match grant.pattern.first() {
                Some(Seg::Literal(first)) => by_first.entry(first.clone()).or_default().push(n),
                _ => wild.push(n),
            }
        }
        Self { all, by_first, wild }
    }
}

/// What one identity may do, ready for allocation-free checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// `None`: no rules file, everything is allowed.
    grants: Option<Grants>,
}

impl Access {
    /// Everything allowed (no rules file).
    pub fn allow_all() -> Self {
        Self { grants: None }
    }

    /// Whether `action` is allowed on anything at all: an identity that may
    /// write nowhere is refused before its request body is read.
    pub fn allows_any(&self, action: Action) -> bool {
        match &self.grants {
            None => true,
            Some(grants) => grants.all.iter().any(|g| !g.deny && g.actions & action.bit() != 0),
        }
    }

    /// Whether `action` on `resource` is allowed: a matching deny wins, else a matching allow, else no.
    pub fn allows(&self, action: Action, resource: &str) -> bool {
        let Some(grants) = &self.grants else {
            return true;
        };
        let first = split(resource).0;
        let candidates = grants.by_first.get(first).into_iter().flatten().chain(&grants.wild);
        let mut allowed = false;
        for grant in candidates.map(|&n| &grants.all[n]).filter(|g| g.actions & action.bit() != 0) {
            if matches(&grant.pattern, Some(resource)) {
                if grant.deny {
                    return false;
                }
                allowed = true;
            }
        }
        allowed
    }
}

/// Matches a pattern against the remaining `/`-separated segments (`None`: none left).
fn matches(pattern: &[Seg], rest: Option<&str>) -> bool {
    let Some((first, more)) = pattern.split_first() else {
        return rest.is_none();
    };
    match (first, rest) {
        (Seg::Many, _) => matches(more, rest) || rest.is_some_and(|r| matches(pattern, split(r).1)),
        (_, None) => false,
        (Seg::One, Some(r)) => matches(more, split(r).1),
        (Seg::Literal(lit), Some(r)) => {
            let (head, tail) = split(r);
            head == lit && matches(more, tail)
        }
    }
}

fn split(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once('/') {
        Some((head, tail)) => (head, Some(tail)),
        None => (rest, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(sub: &str, roles: &[&str], claims: &[(&str, &str)]) -> Identity {
        let mut identity = Identity::new(sub, roles.iter().map(|r| r.to_string()).collect());
        identity.claims = claims.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        identity
    }

    fn rules(text: &str) -> RuleSet {
        RuleSet::parse(text).unwrap()
    }

    #[test]
    fn wildcard_forms() {
        let table = [
            ("a/*", "a/b", true),
            ("a/*", "a", false),
            ("a/*", "a/b/c", false),
            ("a/**", "a", true),
            ("a/**", "a/b", true),
            ("a/**", "a/b/c/d", true),
            ("a/**", "ab", false),
            ("**", "anything/at/all", true),
            ("a/**/z", "a/z", true),
            ("a/**/z", "a/b/c/z", true),
            ("a/**/z", "a/b/c", false),
            ("*/b/*", "x/b/y", true),
            ("*/b/*", "x/c/y", false),
            ("a/b", "a/b", true),
            ("a/b", "a/b/c", false),
        ];
        let anyone = id("u", &["r"], &[]);
        for (pattern, resource, expected) in table {
            let set = rules(&format!("[[rules]]\nroles=[\"*\"]\nresource=\"{pattern}\"\nactions=[\"read\"]\n"));
            assert_eq!(set.specialise(&anyone).allows(Action::Read, resource), expected, "{pattern} vs {resource}");
        }
    }

    #[test]
    fn claims_substitute_one_segment_and_injection_matches_nothing() {
        let set = rules(
            "[[rules]]\nroles=[\"user\"]\nresource=\"todos/{sub}/**\"\nactions=[\"read\",\"write\"]\n\
             [[rules]]\nroles=[\"member\"]\nresource=\"orgs/{orgId}/docs/{docId}\"\nactions=[\"read\"]\n",
        );
        let alice = set.specialise(&id("alice", &["user"], &[]));
        assert!(alice.allows(Action::Write, "todos/alice"));
        assert!(alice.allows(Action::Read, "todos/alice/items"));
        assert!(!alice.allows(Action::Read, "todos/bob"));
        for evil in ["a/*", "../b", "**", "", "*", "{sub}", "a}"] {
            let access = set.specialise(&id(evil, &["user"], &[]));
            for target in ["todos/a/x", "todos/bob", "todos/**", "todos/*", "todos/../b", "todos/", "todos"] {
                assert!(!access.allows(Action::Read, target), "sub {evil:?} reached {target:?}");
            }
        }
        let member = set.specialise(&id("m", &["member"], &[("orgId", "acme"), ("docId", "d1")]));
        assert!(member.allows(Action::Read, "orgs/acme/docs/d1"));
        assert!(!member.allows(Action::Read, "orgs/acme/docs/d2"));
        assert!(!member.allows(Action::Write, "orgs/acme/docs/d1"));
        let no_claim = set.specialise(&id("m", &["member"], &[("orgId", "acme")]));
        assert!(!no_claim.allows(Action::Read, "orgs/acme/docs/d1"), "a missing claim matches nothing");
    }

    #[test]
    fn deny_wins_and_the_default_is_deny() {
        let set = rules(
            "[[rules]]\nroles=[\"*\"]\nresource=\"public/**\"\nactions=[\"read\",\"write\"]\n\
             [[rules]]\nroles=[\"banned\"]\nresource=\"public/**\"\nactions=[\"write\"]\neffect=\"deny\"\n",
        );
        let user = set.specialise(&id("u", &["user"], &[]));
        let banned = set.specialise(&id("b", &["user", "banned"], &[]));
        assert!(user.allows(Action::Write, "public/x"));
        assert!(!banned.allows(Action::Write, "public/x"));
        assert!(banned.allows(Action::Read, "public/x"));
        assert!(!user.allows(Action::Read, "private/x"));
        assert!(!rules("").specialise(&id("u", &["user"], &[])).allows(Action::Read, "x"), "an empty rule set denies");
        assert!(Access::allow_all().allows(Action::Write, "x"));
    }

    #[test]
    fn roles_star_and_role_strings() {
        let set = rules("[[rules]]\nroles=[\"admin\"]\nresource=\"**\"\nactions=[\"read\",\"write\"]\n");
        assert!(set.specialise(&id("a", &["admin"], &[])).allows(Action::Write, "x/y"));
        assert!(!set.specialise(&id("a", &["user"], &[])).allows(Action::Write, "x/y"));
        assert!(!set.specialise(&id("a", &[], &[])).allows(Action::Read, "x"));
    }

    #[test]
    fn invalid_files_name_the_rule_and_the_problem() {
        let err = |text: &str| RuleSet::parse(text).unwrap_err().to_string();
        assert!(
            err("[[rules]]\nroles=[\"u\"]\nresource=\"a\"\nactions=[\"delete\"]\n")
                .contains("rule 1: unknown action \"delete\"")
        );
        assert!(err("[[rules]]\nroles=[\"u\"]\nresource=\"a/b*\"\nactions=[\"read\"]\n").contains("whole segments"));
        assert!(err("[[rules]]\nroles=[\"u\"]\nresource=\"a//b\"\nactions=[\"read\"]\n").contains("empty segment"));
        assert!(err("[[rules]]\nroles=[\"u\"]\nresource=\"a/{}\"\nactions=[\"read\"]\n").contains("claim"));
        assert!(err("[[rules]]\nroles=[]\nresource=\"a\"\nactions=[\"read\"]\n").contains("roles"));
        assert!(
            err("[[rules]]\nroles=[\"u\"]\nresource=\"a\"\nactions=[\"read\"]\neffect=\"maybe\"\n").contains("effect")
        );
        assert!(err("[[rules]]\nroles=[\"u\"]\nresource=\"a\"\nactions=[\"read\"]\ncolour=1\n").contains("colour"));
        assert!(err("[[rulez]]\n").contains("rulez"));
    }
}
