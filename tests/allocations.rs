//! The RBAC check allocates nothing, whatever the number of rules: counted
//! with a counting global allocator (this test binary only).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use syncgate::auth::Identity;
use syncgate::rules::{Action, RuleSet};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn the_rbac_check_with_100_rules_does_not_allocate() {
    let mut text = String::new();
    for n in 0..99 {
        text.push_str(&format!(
            "[[rules]]\nroles = [\"user\"]\nresource = \"orgs/{{orgId}}/team-{n}/**\"\nactions = [\"read\", \"write\"]\n\n"
        ));
    }
    text.push_str("[[rules]]\nroles = [\"user\"]\nresource = \"users/{sub}/**\"\nactions = [\"read\", \"write\"]\n");
    let rules = RuleSet::parse(&text).unwrap();
    let mut identity = Identity::new("alice".to_string(), vec!["user".to_string()]);
    identity.claims.insert("orgId".into(), "acme".into());
    let access = rules.specialise(&identity);
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    let mut allowed = 0;
    for resource in ["users/alice/todos", "users/bob/todos", "orgs/acme/team-7/x", "orgs/other/team-7/x"] {
        for action in [Action::Read, Action::Write] {
            allowed += usize::from(std::hint::black_box(access.allows(action, resource)));
        }
    }
    let after = ALLOCATIONS.load(Ordering::SeqCst);
    assert_eq!(allowed, 4, "alice's own records and her org's team, read and write");
    assert_eq!(after - before, 0, "the check allocated");
}
