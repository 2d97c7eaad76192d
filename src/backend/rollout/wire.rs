//! What travels on a cluster's reload channel: JSON, one message per publish (small, rare, and
//! readable with `redis-cli SUBSCRIBE` when a rollout goes wrong), and how a node judges a
//! command. Input is capped before it is decoded.

use serde::{Deserialize, Serialize};

use super::{NodeOutcome, RolloutEvent};

/// The largest message decoded; anything longer is bad input.
pub(crate) const MAX_MESSAGE: usize = 64 << 10;

/// One message on the reload channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Message {
    /// The coordinator to one node: reload now, as step of rollout `rollout` (its token).
    Reload {
        rollout: u64,
        coordinator: String,
        node: String,
        epoch: u64,
    },
    /// A node to its rollout's coordinator.
    Reply { reply: Reply },
    /// The coordinator's progress, for every node.
    Event { from: String, event: RolloutEvent },
}

/// A node's answer to a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Reply {
    pub(crate) rollout: u64,
    pub(crate) node: String,
    pub(crate) answer: Answer,
}

/// What a node answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "a", rename_all = "snake_case")]
pub(crate) enum Answer {
    /// The command is taken: the local reload begins.
    Accepted,
    /// The local reload ended.
    Ended { outcome: NodeOutcome },
    /// The command was refused (stale token, another epoch, not the lock's holder).
    Refused { reason: String },
}

impl Message {
    pub(crate) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("plain data serializes")
    }

    /// A message read from the channel, or why it is not one.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() > MAX_MESSAGE {
            return Err(format!("{} bytes, more than {MAX_MESSAGE}", bytes.len()));
        }
        serde_json::from_slice(bytes).map_err(|e| format!("does not decode: {e}"))
    }
}

/// How a node judges a `Reload` command addressed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not addressed to this node: ignored.
    NotMine,
    /// The step this node is already running (a repeat): ignored.
    Repeat,
    /// Refused, with why.
    Refuse(String),
    /// To check against the lock, then run.
    Take,
}

/// Judges command (`rollout`, `node`, `epoch`) for this node (`me`, `my_epoch`), which has
/// seen tokens up to `highest` and is running step `running` (if any). Fencing: a token below
/// the highest seen is a stale coordinator's.
pub(crate) fn judge(
    (rollout, node, epoch): (u64, &str, u64),
    (me, my_epoch): (&str, Option<u64>),
    highest: u64,
    running: Option<u64>,
) -> Verdict {
    if node != me {
        return Verdict::NotMine;
    }
    if running == Some(rollout) {
        return Verdict::Repeat;
    }
    if rollout < highest {
        return Verdict::Refuse(format!(
            "stale token {rollout}: this node has seen rollout {highest}"
        ));
    }
    if my_epoch != Some(epoch) {
        return Verdict::Refuse(format!(
            "addressed to epoch {epoch}, this node is {}",
            my_epoch.map_or("not joined".into(), |e| format!("epoch {e}"))
        ));
    }
    Verdict::Take
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let all = [
            Message::Reload {
                rollout: 9,
                coordinator: "a".into(),
                node: "b".into(),
                epoch: 3,
            },
            Message::Reply {
                reply: Reply {
                    rollout: 9,
                    node: "b".into(),
                    answer: Answer::Ended {
                        outcome: NodeOutcome::Failed { error: "x".into() },
                    },
                },
            },
            Message::Event {
                from: "a".into(),
                event: RolloutEvent::Started {
                    rollout: 9,
                    coordinator: "a".into(),
                    nodes: vec!["a".into(), "b".into()],
                },
            },
        ];
        for message in all {
            assert_eq!(Message::decode(&message.encode()), Ok(message));
        }
    }

    #[test]
    fn bad_input_says_why() {
        assert!(Message::decode(b"{not json")
            .unwrap_err()
            .contains("decode"));
        assert!(Message::decode(br#"{"t":"reload"}"#).is_err());
        assert!(Message::decode(br#"{"t":"nuke","all":true}"#).is_err());
        let big = vec![b' '; MAX_MESSAGE + 1];
        assert!(Message::decode(&big).unwrap_err().contains("bytes"));
    }

    #[test]
    fn a_stale_token_is_refused() {
        let me = ("b", Some(3));
        assert_eq!(judge((9, "a", 3), me, 0, None), Verdict::NotMine);
        assert_eq!(judge((9, "b", 3), me, 9, None), Verdict::Take);
        assert_eq!(judge((10, "b", 3), me, 9, None), Verdict::Take);
        let stale = judge((8, "b", 3), me, 9, None);
        assert!(
            matches!(&stale, Verdict::Refuse(why) if why.contains("stale")),
            "{stale:?}"
        );
        assert_eq!(judge((9, "b", 3), me, 9, Some(9)), Verdict::Repeat);
        let old_epoch = judge((9, "b", 2), me, 0, None);
        assert!(matches!(&old_epoch, Verdict::Refuse(why) if why.contains("epoch")));
        assert!(matches!(
            judge((9, "b", 3), ("b", None), 0, None),
            Verdict::Refuse(_)
        ));
    }
}
