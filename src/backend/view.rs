//! This node's view of the others: each read of the members, compared with the last one,
//! becomes [`NodeEvent`]s. Pure: the members in, the events out.
//!
//! | read of a member X             | X in the view                  | X not in the view |
//! |--------------------------------|--------------------------------|-------------------|
//! | its hash, same epoch           | updated                        | `Joined`          |
//! | its hash, another epoch        | `Left{Replaced}`, then `Joined`| `Joined`          |
//! | listed, key gone               | `Left{Expired}`                | —                 |
//! | not listed any more            | `Left{Stopped}` (`Unknown` after a failed read) | — |
//! | a wrong type, bad fields       | kept as it was; counted once   | counted once      |
//!
//! A member whose key expired stays listed until it has been gone long enough for every
//! reader to have seen it gone (the beat script prunes it then), so "not listed any more" means
//! it deleted its own entry: a clean stop. After a read that failed, that is no longer sure.

use std::collections::BTreeMap;

use super::node::{decode, LeaveReason, NodeEvent};
use super::script::Member;
use crate::messaging::NodeInfo;

/// The other nodes, as last read.
#[derive(Debug)]
pub(crate) struct View {
    /// This node's name: its own entry is not one of the others.
    me: String,
    others: BTreeMap<String, NodeInfo>,
    /// Entries found bad, with why: each is counted and warned about once, until it changes.
    bad: BTreeMap<String, String>,
}

/// What one read changed.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Applied {
    pub(crate) events: Vec<NodeEvent>,
    /// Entries newly found bad: (name, why).
    pub(crate) bad: Vec<(String, String)>,
    /// The shortest time to live, in ms, among the others' keys: when the next of them would
    /// expire if it beats no more.
    pub(crate) next_expiry_ms: Option<i64>,
}

impl View {
    pub(crate) fn new(me: &str) -> Self {
        Self {
            me: me.to_owned(),
            others: BTreeMap::new(),
            bad: BTreeMap::new(),
        }
    }

    /// The other nodes.
    pub(crate) fn others(&self) -> impl Iterator<Item = &NodeInfo> {
        self.others.values()
    }

    /// Compares a read of every member with the view; `continuous` is false when a beat
    /// failed since the last read (a member that vanished meanwhile may have expired).
    pub(crate) fn apply(&mut self, members: Vec<Member>, continuous: bool) -> Applied {
        let mut applied = Applied::default();
        let mut listed = std::collections::BTreeSet::new();
        for member in members {
            let name = match &member {
                Member::Hash { name, .. }
                | Member::Gone { name }
                | Member::WrongType { name, .. } => name.clone(),
            };
            if name == self.me {
                continue;
            }
            listed.insert(name.clone());
            match member {
                Member::Hash { pttl, fields, .. } => match decode(&name, &fields) {
                    Ok(info) => {
                        self.bad.remove(&name);
                        if pttl >= 0 {
                            let next = applied.next_expiry_ms.get_or_insert(pttl);
                            *next = (*next).min(pttl);
                        }
                        self.seen(info, &mut applied.events);
                    }
                    Err(why) => self.found_bad(name, why, &mut applied),
                },
                Member::Gone { .. } => {
                    self.bad.remove(&name);
                    if let Some(node) = self.others.remove(&name) {
                        let reason = LeaveReason::Expired;
                        applied.events.push(NodeEvent::Left { node, reason });
                    }
                }
                Member::WrongType { kind, .. } => {
                    let why = format!("a {kind} where a node's hash belongs");
                    self.found_bad(name, why, &mut applied);
                }
            }
        }
        let vanished: Vec<String> = self
            .others
            .keys()
            .filter(|name| !listed.contains(*name))
            .cloned()
            .collect();
        for name in vanished {
            let node = self.others.remove(&name).expect("listed above");
            let reason = if continuous {
                LeaveReason::Stopped
            } else {
                LeaveReason::Unknown
            };
            applied.events.push(NodeEvent::Left { node, reason });
        }
        self.bad.retain(|name, _| listed.contains(name));
        applied
    }

    fn seen(&mut self, info: NodeInfo, events: &mut Vec<NodeEvent>) {
        match self.others.insert(info.id.name.clone(), info.clone()) {
            None => events.push(NodeEvent::Joined(info)),
            Some(old) if old.id.epoch != info.id.epoch => {
                let reason = LeaveReason::Replaced;
                events.push(NodeEvent::Left { node: old, reason });
                events.push(NodeEvent::Joined(info));
            }
            Some(_) => {}
        }
    }

    fn found_bad(&mut self, name: String, why: String, applied: &mut Applied) {
        if self.bad.get(&name) != Some(&why) {
            self.bad.insert(name.clone(), why.clone());
            applied.bad.push((name, why));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::backend::node::fields;
    use crate::backend::NodeId;

    fn hash(name: &str, epoch: u64, pttl: i64) -> Member {
        let (fields, _) = fields(None, "h", SystemTime::UNIX_EPOCH);
        let mut fields: Vec<(String, Vec<u8>)> = fields
            .into_iter()
            .map(|(f, v)| (f.to_owned(), v.into_bytes()))
            .collect();
        fields.push(("epoch".into(), epoch.to_string().into_bytes()));
        Member::Hash {
            name: name.into(),
            pttl,
            fields,
        }
    }

    fn gone(name: &str) -> Member {
        Member::Gone { name: name.into() }
    }

    fn ids(applied: &Applied) -> Vec<String> {
        applied
            .events
            .iter()
            .map(|e| match e {
                NodeEvent::Joined(n) => format!("joined {}", n.id),
                NodeEvent::Left { node, reason } => format!("left {} {reason:?}", node.id),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn members_join_once_and_this_node_is_not_one_of_them() {
        let mut view = View::new("me");
        let first = view.apply(vec![hash("me", 1, 3000), hash("b", 2, 2500)], true);
        assert_eq!(ids(&first), ["joined b#2"]);
        assert_eq!(first.next_expiry_ms, Some(2500));
        let again = view.apply(vec![hash("me", 1, 3000), hash("b", 2, 2900)], true);
        assert!(again.events.is_empty());
        assert_eq!(
            view.others().map(|n| n.id.clone()).collect::<Vec<_>>(),
            [NodeId {
                name: "b".into(),
                epoch: 2
            }]
        );
    }

    #[test]
    fn an_expired_key_is_left_expired_and_a_deleted_entry_left_stopped() {
        let mut view = View::new("me");
        view.apply(vec![hash("b", 2, 3000), hash("c", 3, 3000)], true);
        let applied = view.apply(vec![gone("b")], true);
        assert_eq!(ids(&applied), ["left b#2 Expired", "left c#3 Stopped"]);
        assert!(view.apply(vec![gone("b")], true).events.is_empty(), "once");
    }

    #[test]
    fn after_a_failed_read_a_vanished_member_is_unknown() {
        let mut view = View::new("me");
        view.apply(vec![hash("b", 2, 3000)], true);
        assert_eq!(ids(&view.apply(vec![], false)), ["left b#2 Unknown"]);
    }

    #[test]
    fn a_new_epoch_replaces_the_old() {
        let mut view = View::new("me");
        view.apply(vec![hash("b", 2, 3000)], true);
        let applied = view.apply(vec![hash("b", 5, 3000)], true);
        assert_eq!(ids(&applied), ["left b#2 Replaced", "joined b#5"]);
    }

    #[test]
    fn bad_entries_are_counted_once_each_and_keep_the_view() {
        let mut view = View::new("me");
        view.apply(vec![hash("b", 2, 3000)], true);
        let wrong = || Member::WrongType {
            name: "x".into(),
            kind: "string".into(),
        };
        let broken = Member::Hash {
            name: "b".into(),
            pttl: 3000,
            fields: vec![("v".into(), b"1".to_vec())],
        };
        let applied = view.apply(vec![broken.clone(), wrong()], true);
        assert!(applied.events.is_empty(), "{:?}", applied.events);
        assert_eq!(applied.bad.len(), 2);
        assert!(applied.bad[1].1.contains("string"));
        assert!(view.apply(vec![broken, wrong()], true).bad.is_empty());
        assert_eq!(view.others().count(), 1);
        // Gone and back: counted again.
        view.apply(vec![hash("b", 2, 3000)], true);
        assert_eq!(
            view.apply(vec![hash("b", 2, 3000), wrong()], true)
                .bad
                .len(),
            1
        );
    }
}
