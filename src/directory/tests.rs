use std::collections::HashMap;

use proptest::prelude::*;

use super::*;
use crate::model::Status;

/// A backend in memory: loads what an event touches, applies it, keeps the
/// effects, exactly as the real stores do inside their transaction.
#[derive(Default)]
struct Mem {
    records: HashMap<String, Record>,
    links: Vec<MergeLink>,
    history: Vec<(String, HistoryEntry)>,
    changes: Vec<Change>,
    /// Versions before an unfinished rebuild.
    floors: HashMap<String, u64>,
}

impl Mem {
    fn ingest(&mut self, event: &CustomerEvent, dedupe: &str) -> Option<Outcome> {
        let ids = touched_ids(event);
        let loaded = Loaded {
            records: ids
                .iter()
                .filter_map(|id| self.records.get(id).map(|r| (id.clone(), r.clone())))
                .collect(),
            links: self
                .links
                .iter()
                .filter(|l| ids.contains(&l.survivor) || ids.contains(&l.absorbed))
                .cloned()
                .collect(),
            suppressed: Default::default(),
            floors: self
                .floors
                .iter()
                .filter(|(id, _)| ids.contains(id))
                .map(|(id, v)| (id.clone(), *v))
                .collect(),
        };
        let meta = EventMeta {
            event_id: format!("evt_{dedupe}"),
            received_at: UtcMillis::now(),
            order_key: OrderKey {
                at: event.order_at,
                sent_at: event.sent_at,
                dedupe_key: dedupe.to_owned(),
            },
        };
        let effects = apply(&loaded, event, &meta, UtcMillis::now());
        for write in effects.writes {
            self.records.insert(write.record.id.clone(), write.record);
        }
        for link in effects.links {
            self.links
                .retain(|l| (&l.survivor, &l.absorbed) != (&link.survivor, &link.absorbed));
            self.links.push(link);
        }
        self.history.extend(effects.history);
        self.changes.extend(effects.changes);
        effects.outcome
    }

    /// The directory without its bookkeeping, for comparisons.
    fn directory(&self) -> BTreeMap<String, Customer> {
        self.records
            .values()
            .map(|r| {
                let mut c = r.to_customer();
                c.version = 0;
                c.changed_at = UtcMillis::from_timestamp(jiff::Timestamp::UNIX_EPOCH);
                (c.id.clone(), c)
            })
            .collect()
    }
}

fn who(n: &str) -> CustomerRef {
    CustomerRef {
        id: format!("treez:shop:{n}"),
        source: "treez".into(),
        external_id: n.into(),
        account: Some("shop".into()),
    }
}

fn at(minute: u32) -> UtcMillis {
    format!("2026-04-24T10:{minute:02}:00Z").parse().unwrap()
}

fn event(n: &str, minute: u32, name: &str) -> CustomerEvent {
    CustomerEvent {
        customer: who(n),
        order_at: Some(at(minute)),
        sent_at: None,
        profile: Profile {
            account: Some("shop".into()),
            first_name: Some(name.into()),
            updated_at: Some(at(minute)),
            ..Profile::default()
        },
        merged_into: None,
        merged_from: vec![],
        warnings: vec![],
    }
}

#[test]
fn newer_snapshots_apply_and_older_ones_are_stale() {
    let mut mem = Mem::default();
    assert_eq!(mem.ingest(&event("1", 10, "Ann"), "a"), Some(Outcome::Applied));
    assert_eq!(mem.ingest(&event("1", 20, "Anne"), "b"), Some(Outcome::Applied));
    assert_eq!(mem.ingest(&event("1", 15, "Annie"), "c"), Some(Outcome::Stale));
    let record = &mem.records["treez:shop:1"];
    assert_eq!(record.profile.first_name.as_deref(), Some("Anne"));
    assert_eq!(record.version, 2);
    let actions: Vec<_> = mem.changes.iter().map(|c| c.action).collect();
    assert_eq!(actions, [Action::Created, Action::Updated]);
    let outcomes: Vec<_> = mem.history.iter().map(|(_, h)| h.outcome).collect();
    assert_eq!(outcomes, [Outcome::Applied, Outcome::Applied, Outcome::Stale]);
}

#[test]
fn the_same_event_again_is_unchanged_and_its_new_mapping_applies() {
    let mut mem = Mem::default();
    let e = event("1", 10, "Ann");
    mem.ingest(&e, "a");
    assert_eq!(mem.ingest(&e, "a"), Some(Outcome::Unchanged));
    assert_eq!(mem.records["treez:shop:1"].version, 1);
    assert_eq!(mem.changes.len(), 1);
    // Reprocessed after an adapter fix: the same delivery, mapped anew.
    assert_eq!(mem.ingest(&event("1", 10, "Anna"), "a"), Some(Outcome::Applied));
    let record = &mem.records["treez:shop:1"];
    assert_eq!(
        (record.profile.first_name.as_deref(), record.version),
        (Some("Anna"), 2)
    );
    // Older deliveries stay stale.
    assert_eq!(mem.ingest(&event("1", 5, "Old"), "b"), Some(Outcome::Stale));
}

#[test]
fn a_newer_identical_snapshot_is_unchanged_but_raises_the_order_key() {
    let mut mem = Mem::default();
    let mut e = event("1", 10, "Ann");
    mem.ingest(&e, "a");
    e.order_at = Some(at(30));
    assert_eq!(mem.ingest(&e, "b"), Some(Outcome::Unchanged));
    assert_eq!(mem.records["treez:shop:1"].order_key.as_ref().unwrap().at, Some(at(30)));
    // Anything between the two is now stale.
    assert_eq!(mem.ingest(&event("1", 20, "Zed"), "c"), Some(Outcome::Stale));
    assert_eq!(mem.changes.len(), 1);
}

#[test]
fn business_ids_record_attach_and_detach() {
    let mut mem = Mem::default();
    let sets: [&[&str]; 3] = [&["123"], &["123", "456", "789"], &["123", "789"]];
    for (i, set) in sets.iter().enumerate() {
        let mut e = event("1", 10 + i as u32, "Ann");
        e.profile.business_ids = set.iter().map(|s| s.to_string()).collect();
        mem.ingest(&e, &i.to_string());
    }
    let ids: Vec<_> = mem
        .history
        .iter()
        .map(|(_, h)| h.changes["businessIds"].clone())
        .collect();
    assert_eq!(ids[0], json!({"added": ["123"], "removed": []}));
    assert_eq!(ids[1], json!({"added": ["456", "789"], "removed": []}));
    assert_eq!(ids[2], json!({"added": [], "removed": ["456"]}));
}

fn survivor_event() -> CustomerEvent {
    let mut e = event("S", 30, "Sam");
    e.profile.platform_status = Some("MERGED".into());
    e.merged_from = vec![who("L")];
    e
}

fn absorbed_event() -> CustomerEvent {
    let mut e = event("L", 29, "Lou");
    e.profile.status = Status::Inactive;
    e.profile.platform_status = Some("DEACTIVATED".into());
    e.merged_into = Some(who("S"));
    e
}

#[test]
fn a_merge_converges_whichever_delivery_comes_first() {
    let mut survivor_first = Mem::default();
    survivor_first.ingest(&survivor_event(), "s");
    survivor_first.ingest(&absorbed_event(), "l");
    let mut absorbed_first = Mem::default();
    absorbed_first.ingest(&absorbed_event(), "l");
    absorbed_first.ingest(&survivor_event(), "s");
    assert_eq!(survivor_first.directory(), absorbed_first.directory());

    let dir = survivor_first.directory();
    let l = &dir["treez:shop:L"];
    assert_eq!(l.profile.status, Status::Merged);
    assert_eq!(l.merged_into.as_deref(), Some("treez:shop:S"));
    assert_eq!(l.profile.first_name.as_deref(), Some("Lou"));
    assert_eq!(dir["treez:shop:S"].merged_from, ["treez:shop:L"]);
    assert_eq!(dir["treez:shop:S"].profile.status, Status::Active);
}

#[test]
fn a_merge_stub_is_created_once_as_merged() {
    let mut mem = Mem::default();
    mem.ingest(&survivor_event(), "s");
    let stub: Vec<_> = mem.changes.iter().filter(|c| c.customer.id == "treez:shop:L").collect();
    assert_eq!(stub.len(), 1);
    assert_eq!(stub[0].action, Action::Created);
    assert_eq!(stub[0].customer.profile.status, Status::Merged);
    assert_eq!(stub[0].customer.profile.account.as_deref(), Some("shop"));
    // The absorbed record's own, older snapshot still fills its fields,
    // and the link stays.
    mem.ingest(&event("L", 5, "Lou"), "old-l");
    let l = &mem.records["treez:shop:L"];
    assert_eq!(l.profile.first_name.as_deref(), Some("Lou"));
    assert_eq!(l.merged_into.as_deref(), Some("treez:shop:S"));
}

#[test]
fn a_record_that_gains_merged_into_is_announced_as_merged() {
    let mut mem = Mem::default();
    mem.ingest(&event("L", 1, "Lou"), "l0");
    mem.ingest(&survivor_event(), "s");
    let l: Vec<_> = mem
        .changes
        .iter()
        .filter(|c| c.customer.id == "treez:shop:L")
        .map(|c| c.action)
        .collect();
    assert_eq!(l, [Action::Created, Action::Merged]);
}

#[test]
fn the_higher_claim_wins_when_two_survivors_claim_one_record() {
    let mut mem = Mem::default();
    let mut s1 = event("S1", 10, "One");
    s1.merged_from = vec![who("L")];
    let mut s2 = event("S2", 20, "Two");
    s2.merged_from = vec![who("L")];
    mem.ingest(&s2, "s2");
    mem.ingest(&s1, "s1");
    assert_eq!(
        mem.records["treez:shop:L"].merged_into.as_deref(),
        Some("treez:shop:S2")
    );
    assert_eq!(mem.records["treez:shop:S1"].merged_from, ["treez:shop:L"]);
    assert_eq!(mem.records["treez:shop:S2"].merged_from, ["treez:shop:L"]);
}

#[test]
fn self_merges_and_erased_ids_make_no_links() {
    let mut mem = Mem::default();
    let mut e = event("S", 10, "Sam");
    e.merged_from = vec![who("S")];
    e.merged_into = Some(who("S"));
    mem.ingest(&e, "s");
    assert!(mem.links.is_empty());
    assert_eq!(mem.records["treez:shop:S"].merged_into, None);

    let mut e = event("S", 11, "Sam");
    e.merged_from = vec![who("gone")];
    let loaded = Loaded {
        suppressed: ["treez:shop:gone".to_owned()].into(),
        ..Loaded::default()
    };
    let meta = EventMeta {
        event_id: "e".into(),
        received_at: at(0),
        order_key: OrderKey {
            at: Some(at(11)),
            sent_at: None,
            dedupe_key: "x".into(),
        },
    };
    let effects = apply(&loaded, &e, &meta, at(0));
    assert!(effects.links.is_empty());
    assert!(effects.writes.iter().all(|w| w.record.id != "treez:shop:gone"));
}

/// Events over a few customers, with merge claims among them.
fn arb_events() -> impl Strategy<Value = Vec<CustomerEvent>> {
    let ids = prop::sample::select(vec!["A", "B", "C", "D"]);
    let one = (
        ids.clone(),
        0u32..6,
        prop::sample::select(vec!["Ann", "Bob", "Cy"]),
        prop::option::of(ids.clone()),
        prop::collection::vec(ids, 0..2),
        prop::collection::vec(prop::sample::select(vec!["1", "2", "3"]), 0..3),
    )
        .prop_map(|(id, minute, name, into, from, businesses)| {
            let mut e = event(id, minute, name);
            e.merged_into = into.map(who);
            e.merged_from = from.into_iter().map(who).collect();
            e.profile.business_ids = businesses.into_iter().map(str::to_owned).collect();
            e
        });
    prop::collection::vec(one, 1..8)
}

/// The events, and an arrival order: every event at least once, some more
/// than once, shuffled.
fn arb_arrivals() -> impl Strategy<Value = (Vec<CustomerEvent>, Vec<usize>)> {
    arb_events().prop_flat_map(|events| {
        let n = events.len();
        prop::collection::vec(0..n, 0..6).prop_flat_map(move |repeats| {
            let arrivals: Vec<usize> = (0..n).chain(repeats).collect();
            (Just(events.clone()), Just(arrivals).prop_shuffle())
        })
    })
}

proptest! {
    /// SPEC §4: the final directory is the same whatever the arrival order,
    /// however many times each event arrives.
    #[test]
    fn the_directory_is_independent_of_order_and_repetition((events, arrivals) in arb_arrivals()) {
        let mut in_order = Mem::default();
        for (i, e) in events.iter().enumerate() {
            in_order.ingest(e, &format!("d{i}"));
        }
        let mut shuffled = Mem::default();
        for i in arrivals {
            shuffled.ingest(&events[i], &format!("d{i}"));
        }
        prop_assert_eq!(in_order.directory(), shuffled.directory());
    }
}

/// Who an erasure at minute 59 is, for history entries.
fn erasure_meta() -> EventMeta {
    EventMeta {
        event_id: "erasure".into(),
        received_at: at(59),
        order_key: OrderKey {
            at: None,
            sent_at: None,
            dedupe_key: "erasure".into(),
        },
    }
}

/// A rebuild replays each customer's changes from nothing, and may count
/// fewer than were sent: until it has finished, the floor it kept is what
/// a change comes after, for a record the rebuild recreated, one it has
/// not reached yet, and a partner an erasure unlinks.
#[test]
fn a_change_comes_after_the_version_a_rebuild_kept_as_a_floor() {
    let mut mem = Mem::default();
    mem.floors.insert("treez:shop:1".into(), 7);
    mem.ingest(&event("1", 10, "Ann"), "a");
    assert_eq!(
        mem.records["treez:shop:1"].version, 8,
        "a record the rebuild has not reached"
    );
    mem.ingest(&event("1", 20, "Anne"), "b");
    assert_eq!(mem.records["treez:shop:1"].version, 9);
    assert_eq!(
        mem.changes.iter().map(|c| c.customer.version).collect::<Vec<_>>(),
        [8, 9]
    );

    let mut mem = Mem::default();
    mem.ingest(&survivor_event(), "s");
    mem.ingest(&absorbed_event(), "l");
    let l = mem.records["treez:shop:L"].version;
    let loaded = Loaded {
        records: mem.records.clone(),
        links: mem.links.clone(),
        floors: HashMap::from([("treez:shop:L".to_owned(), l + 5)]),
        ..Loaded::default()
    };
    let meta = erasure_meta();
    let effects = unlink(&loaded, "treez:shop:S", &meta, at(59));
    assert_eq!(effects.changes[0].customer.version, l + 6);
}

#[test]
fn erasing_a_merged_record_unlinks_its_partners() {
    let mut mem = Mem::default();
    mem.ingest(&survivor_event(), "s");
    mem.ingest(&absorbed_event(), "l");
    let meta = erasure_meta();
    let loaded = |mem: &Mem| Loaded {
        records: mem.records.clone(),
        links: mem.links.clone(),
        ..Loaded::default()
    };

    let effects = unlink(&loaded(&mem), "treez:shop:S", &meta, at(59));
    let l = &effects
        .writes
        .iter()
        .find(|w| w.record.id == "treez:shop:L")
        .unwrap()
        .record;
    assert_eq!(l.merged_into, None);
    assert_eq!(
        l.to_customer().profile.status,
        Status::Inactive,
        "back to its own platform status"
    );
    assert_eq!(l.version, mem.records["treez:shop:L"].version + 1);
    assert!(
        effects.writes.iter().all(|w| w.record.id != "treez:shop:S"),
        "the erased record is not written"
    );
    assert_eq!(effects.changes.len(), 1);
    assert_eq!(effects.changes[0].action, Action::Updated);

    let effects = unlink(&loaded(&mem), "treez:shop:L", &meta, at(59));
    let s = &effects.writes[0].record;
    assert_eq!((s.id.as_str(), s.merged_from.len()), ("treez:shop:S", 0));
    assert_eq!(
        effects.history[0].1.changes["mergedFrom"],
        json!({"added": [], "removed": ["treez:shop:L"]})
    );
}

#[test]
fn an_erased_record_is_announced_deleted_one_version_above_its_last() {
    let mut mem = Mem::default();
    mem.ingest(&survivor_event(), "s");
    mem.ingest(&absorbed_event(), "l");
    let loaded = Loaded {
        records: mem.records.clone(),
        links: mem.links.clone(),
        ..Loaded::default()
    };
    let s = &mem.records["treez:shop:S"];
    let erasing = erase(&loaded, s, "erasure_1".into(), at(59));
    assert_eq!(erasing.deleted.action, Action::Deleted);
    assert_eq!(erasing.deleted.customer.id, "treez:shop:S");
    assert_eq!(erasing.deleted.customer.version, s.version + 1);
    assert_eq!(erasing.deleted.customer.changed_at, at(59));
    assert!(erasing.deleted.changes.is_empty());
    assert_eq!(erasing.effects.history[0].1.event_id, "erasure_1");
    assert_eq!(
        erasing
            .effects
            .changes
            .iter()
            .map(|c| c.customer.id.as_str())
            .collect::<Vec<_>>(),
        ["treez:shop:L"],
        "the partner it absorbed is unlinked"
    );
}
