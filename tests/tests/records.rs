//! Record schemas: documents round-trip through automerge, field rules catch bad values, the
//! server's corrections restore exactly what must be restored, and offline edits merge.

use automerge::AutoCommit;
use autosurgeon::{hydrate, reconcile};
use outpost_mobile::records::customer::{Contact, Customer};
use outpost_mobile::records::follow_up::FollowUp;
use outpost_mobile::records::{RecordType, ServerFields, read};
use proptest::prelude::*;

fn contact(id: &str, name: &str) -> Contact {
    Contact {
        id: id.into(),
        name: name.into(),
        title: None,
        phones: vec![],
        emails: vec![],
    }
}

fn doc_of(customer: &Customer) -> AutoCommit {
    let mut doc = AutoCommit::new();
    reconcile(&mut doc, customer).unwrap();
    doc
}

#[test]
fn a_customer_round_trips_and_missing_fields_take_defaults() {
    let mut customer = Customer::new("北京示例科技有限公司");
    customer.phones.push("138 0013 8000".into());
    customer.contacts.push(contact("c1", "张三"));
    customer.notes.splice(0, 0, "首次拜访");
    let doc = doc_of(&customer);
    let back: Customer = hydrate(&doc).unwrap();
    assert_eq!(back, customer);

    // A document written by another client with only a name still hydrates.
    let mut sparse = AutoCommit::new();
    automerge::transaction::Transactable::put(&mut sparse, automerge::ROOT, "name", "Acme")
        .unwrap();
    let sparse: Customer = hydrate(&sparse).unwrap();
    assert_eq!(sparse.name, "Acme");
    assert_eq!(sparse.record_type, "customer");
    assert_eq!(sparse.server, ServerFields::default());
    assert_eq!(sparse.server.state, "owned");
}

#[test]
fn field_rules_name_each_bad_field() {
    let mut customer = Customer::new(" ");
    customer.kind = "alien".into();
    customer.level = Some("Z".into());
    customer.tags = (0..31).map(|i| format!("t{i}")).collect();
    customer.contacts = vec![contact("same", "A"), contact("same", "")];
    let fields: Vec<String> = customer.validate().into_iter().map(|v| v.field).collect();
    for expected in [
        "name",
        "kind",
        "level",
        "tags",
        "contacts[1].id",
        "contacts[1].name",
    ] {
        assert!(
            fields.contains(&expected.to_string()),
            "{expected} in {fields:?}"
        );
    }
    assert!(Customer::new("Fine").validate().is_empty());

    let mut visit = FollowUp::new("doc", "visit", "yesterday");
    visit.next_contact_at = Some("2026-12-01T09:00:00+08:00".into());
    let fields: Vec<String> = visit.validate().into_iter().map(|v| v.field).collect();
    assert_eq!(fields, ["at"]);
}

#[test]
fn corrections_restore_server_fields_and_invalid_edits_only() {
    let mut previous = Customer::new("Acme");
    previous.server.owner = Some("rep-1".into());
    let mut proposed = previous.clone();
    proposed.server.owner = Some("rep-2".into());
    proposed.industry = Some("制造业".into());
    proposed.level = Some("S".into());
    let (fixed, corrections) = Customer::correct(&previous, &proposed);
    assert_eq!(
        fixed.server.owner.as_deref(),
        Some("rep-1"),
        "owner is the server's"
    );
    assert_eq!(fixed.level, None, "an invalid level returns to what it was");
    assert_eq!(
        fixed.industry.as_deref(),
        Some("制造业"),
        "a valid edit stays"
    );
    let fields: Vec<&str> = corrections.iter().map(|c| c.field.as_str()).collect();
    assert_eq!(fields, ["level", "server"]);

    let unchanged = Customer::correct(&previous, &previous);
    assert!(unchanged.1.is_empty());

    let visit = FollowUp::new("customer-a", "call", "2026-11-27T09:00:00Z");
    let mut moved = visit.clone();
    moved.customer = "customer-b".into();
    let (fixed, corrections) = FollowUp::correct(&visit, &moved);
    assert_eq!(fixed.customer, "customer-a");
    assert_eq!(corrections.len(), 1);
}

#[test]
fn offline_edits_to_different_fields_and_contacts_all_survive_a_merge() {
    let mut base = Customer::new("Acme");
    base.contacts = vec![contact("c1", "Li"), contact("c2", "Wang")];
    let mut phone_a = doc_of(&base);
    let mut phone_b = phone_a.fork();

    let mut a: Customer = hydrate(&phone_a).unwrap();
    a.industry = Some("Retail".into());
    a.contacts.retain(|c| c.id != "c2");
    a.notes.splice(0, 0, "A wrote this. ");
    reconcile(&mut phone_a, &a).unwrap();

    let mut b: Customer = hydrate(&phone_b).unwrap();
    b.address = Some("上海市浦东新区".into());
    b.contacts.push(contact("c3", "Zhao"));
    b.contacts[0].title = Some("CFO".into());
    let end = b.notes.as_str().chars().count();
    b.notes.splice(end, 0, "B wrote that.");
    reconcile(&mut phone_b, &b).unwrap();

    phone_a.merge(&mut phone_b).unwrap();
    phone_b.merge(&mut phone_a).unwrap();
    let merged: Customer = hydrate(&phone_a).unwrap();
    assert_eq!(
        merged,
        hydrate::<_, Customer>(&phone_b).unwrap(),
        "both phones agree"
    );
    assert_eq!(merged.industry.as_deref(), Some("Retail"));
    assert_eq!(merged.address.as_deref(), Some("上海市浦东新区"));
    let ids: Vec<&str> = merged.contacts.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["c1", "c3"], "A's delete and B's insert both apply");
    assert_eq!(merged.contacts[0].title.as_deref(), Some("CFO"));
    assert!(
        merged.notes.as_str().contains("A wrote this.")
            && merged.notes.as_str().contains("B wrote that.")
    );
}

/// A random offline edit to a customer.
#[derive(Debug, Clone)]
pub(crate) enum Edit {
    Name(String),
    Industry(Option<String>),
    AddTag(String),
    RemoveTag(usize),
    AddContact(u8),
    RemoveContact(usize),
    Note(usize, String),
}

pub(crate) fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        "[a-z]{1,8}".prop_map(Edit::Name),
        proptest::option::of("[a-z]{1,8}").prop_map(Edit::Industry),
        "[a-z]{1,5}".prop_map(Edit::AddTag),
        (0usize..4).prop_map(Edit::RemoveTag),
        any::<u8>().prop_map(Edit::AddContact),
        (0usize..4).prop_map(Edit::RemoveContact),
        ((0usize..20), "[a-z ]{1,6}").prop_map(|(at, text)| Edit::Note(at, text)),
    ]
}

pub(crate) fn apply(doc: &mut AutoCommit, edit: &Edit) {
    let mut c: Customer = hydrate(doc).unwrap();
    match edit {
        Edit::Name(n) => c.name = n.clone(),
        Edit::Industry(i) => c.industry = i.clone(),
        Edit::AddTag(t) => c.tags.push(t.clone()),
        Edit::RemoveTag(i) => {
            if *i < c.tags.len() {
                c.tags.remove(*i);
            }
        }
        Edit::AddContact(n) => c.contacts.push(contact(
            &format!("id{n}-{}", c.contacts.len()),
            &format!("n{n}"),
        )),
        Edit::RemoveContact(i) => {
            if *i < c.contacts.len() {
                c.contacts.remove(*i);
            }
        }
        Edit::Note(at, text) => {
            let len = c.notes.as_str().chars().count();
            c.notes.splice((*at).min(len), 0, text);
        }
    }
    reconcile(doc, &c).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// Random offline edit sequences on three devices converge to one state, whatever order
    /// the devices merge in.
    #[test]
    fn three_devices_converge(edits in proptest::collection::vec(proptest::collection::vec(edit(), 0..8), 3)) {
        let base = doc_of(&Customer::new("Start"));
        let mut devices: Vec<AutoCommit> = (0..3).map(|_| base.clone().fork()).collect();
        for (device, sequence) in devices.iter_mut().zip(&edits) {
            for e in sequence {
                apply(device, e);
            }
        }
        let (d0, rest) = devices.split_first_mut().unwrap();
        let (d1, rest) = rest.split_first_mut().unwrap();
        let d2 = &mut rest[0];
        d1.merge(d2).unwrap();
        d0.merge(d1).unwrap();
        d2.merge(d0).unwrap();
        d1.merge(d0).unwrap();
        let states: Vec<Customer> = [&*d0, &*d1, &*d2].iter().map(|d| hydrate(*d).unwrap()).collect();
        prop_assert_eq!(&states[0], &states[1]);
        prop_assert_eq!(&states[1], &states[2]);
        // The server's one-pass hydration reads the same record, conflicts included.
        for (doc, state) in [&*d0, &*d1, &*d2].iter().zip(&states) {
            prop_assert_eq!(&read::hydrate::<Customer>(doc).unwrap(), state);
        }
    }
}

#[test]
fn strings_written_as_text_objects_by_javascript_clients_hydrate() {
    use automerge::transaction::Transactable;
    use automerge::{ObjType, ROOT};
    let mut doc = AutoCommit::new();
    for (field, value) in [
        ("type", "customer"),
        ("name", "文本公司"),
        ("industry", "Retail"),
    ] {
        let text = doc.put_object(ROOT, field, ObjType::Text).unwrap();
        doc.splice_text(&text, 0, 0, value).unwrap();
    }
    let phones = doc.put_object(ROOT, "phones", ObjType::List).unwrap();
    let phone = doc.insert_object(&phones, 0, ObjType::Text).unwrap();
    doc.splice_text(&phone, 0, 0, "13800138000").unwrap();
    let customer: Customer = hydrate(&doc).unwrap();
    assert_eq!(customer.name, "文本公司");
    assert_eq!(customer.industry.as_deref(), Some("Retail"));
    assert_eq!(customer.phones, ["13800138000"]);
    assert_eq!(read::hydrate::<Customer>(&doc).unwrap(), customer);

    // A number where a string belongs is malformed, not silently accepted.
    let mut bad = AutoCommit::new();
    bad.put(ROOT, "name", 42).unwrap();
    assert!(hydrate::<_, Customer>(&bad).is_err());
    assert!(read::hydrate::<Customer>(&bad).is_err());
}

/// The server hydrates with one pass over each map (`records::read`): concurrent changes of
/// the server-owned maps (two nodes returning and assigning the same customer) and of plain
/// fields read back exactly as autosurgeon's field-by-field hydration reads them.
#[test]
fn one_pass_hydration_reads_what_field_by_field_hydration_reads() {
    let mut base = Customer::new("并发客户");
    base.server.owner = Some("rep-a".into());
    base.custody.pool = Some("pool-1".into());
    base.custody.owned_since = Some("2026-11-01T00:00:00.000Z".into());
    base.phones = vec!["13800138000".into()];
    base.contacts = vec![contact("c1", "王经理")];
    let base = doc_of(&base);
    let mut returned = base.clone().fork();
    let mut assigned = base.clone().fork();
    let mut c: Customer = hydrate(&returned).unwrap();
    c.custody.previous_owner = c.server.owner.take();
    c.server.state = "pool".into();
    c.custody.owned_since = None;
    c.custody.action = Some("return".into());
    c.custody.reason = Some("no follow-up for 3 days".into());
    c.level = Some("B".into());
    reconcile(&mut returned, &c).unwrap();
    let mut c: Customer = hydrate(&assigned).unwrap();
    c.server.owner = Some("rep-b".into());
    c.custody.action = Some("assign".into());
    c.custody.owned_since = Some("2026-11-02T00:00:00.000Z".into());
    c.level = Some("A".into());
    c.contacts[0].title = Some("CFO".into());
    reconcile(&mut assigned, &c).unwrap();
    returned.merge(&mut assigned).unwrap();
    let field_by_field: Customer = hydrate(&returned).unwrap();
    assert_eq!(
        read::hydrate::<Customer>(&returned).unwrap(),
        field_by_field
    );
    assert_eq!(field_by_field.contacts[0].title.as_deref(), Some("CFO"));
    // Both sides' `custody.action` conflict; whichever wins, both readings agree on it.
    assert!(
        ["return", "assign"].contains(&field_by_field.custody.action.as_deref().unwrap()),
        "{field_by_field:?}"
    );
    // An empty document hydrates to the same defaults either way.
    let empty = AutoCommit::new();
    assert_eq!(
        read::hydrate::<Customer>(&empty).ok(),
        hydrate::<_, Customer>(&empty).ok()
    );
}

#[test]
fn set_text_edits_only_what_differs_so_concurrent_text_edits_merge() {
    let mut base = Customer::new("Acme");
    base.notes = autosurgeon::Text::with_value("第一段。第二段。");
    let mut a_doc = outpost_mobile::records::new_document();
    reconcile(&mut a_doc, &base).unwrap();
    let mut b_doc = a_doc.fork();

    let mut a: Customer = hydrate(&a_doc).unwrap();
    outpost_mobile::records::set_text(&mut a.notes, "第一段（改）。第二段。");
    reconcile(&mut a_doc, &a).unwrap();
    let mut b: Customer = hydrate(&b_doc).unwrap();
    outpost_mobile::records::set_text(&mut b.notes, "第一段。第二段。第三段。");
    reconcile(&mut b_doc, &b).unwrap();

    a_doc.merge(&mut b_doc).unwrap();
    let merged: Customer = hydrate(&a_doc).unwrap();
    assert_eq!(merged.notes.as_str(), "第一段（改）。第二段。第三段。");
}
