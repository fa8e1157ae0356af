//! Serde for the values nodes send each other (bincode over the shard forwarding RPC): Temporal's
//! protobuf messages inside them travel as their protobuf encoding. Use with
//! `#[serde(with = "crate::wire::...")]`.

/// A protobuf message (also `Box<M>`).
pub mod message {
    use prost::Message;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::ByteBuf;

    /// Serializes.
    pub fn serialize<M: Message, S: Serializer>(message: &M, s: S) -> Result<S::Ok, S::Error> {
        serde_bytes::serialize(&message.encode_to_vec(), s)
    }

    /// Deserializes.
    pub fn deserialize<'de, M: Message + Default, D: Deserializer<'de>>(
        d: D,
    ) -> Result<M, D::Error> {
        let bytes = ByteBuf::deserialize(d)?;
        M::decode(bytes.as_slice()).map_err(D::Error::custom)
    }
}

/// `Option<M>` of a protobuf message.
pub mod opt {
    use prost::Message;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_bytes::ByteBuf;

    /// Serializes.
    pub fn serialize<M: Message, S: Serializer>(
        message: &Option<M>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        message
            .as_ref()
            .map(|m| ByteBuf::from(m.encode_to_vec()))
            .serialize(s)
    }

    /// Deserializes.
    pub fn deserialize<'de, M: Message + Default, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<M>, D::Error> {
        Option::<ByteBuf>::deserialize(d)?
            .map(|bytes| M::decode(bytes.as_slice()).map_err(D::Error::custom))
            .transpose()
    }
}

/// `Vec<M>` of protobuf messages.
pub mod vec {
    use prost::Message;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_bytes::ByteBuf;

    /// Serializes.
    pub fn serialize<M: Message, S: Serializer>(messages: &[M], s: S) -> Result<S::Ok, S::Error> {
        messages
            .iter()
            .map(|m| ByteBuf::from(m.encode_to_vec()))
            .collect::<Vec<_>>()
            .serialize(s)
    }

    /// Deserializes.
    pub fn deserialize<'de, M: Message + Default, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<M>, D::Error> {
        Vec::<ByteBuf>::deserialize(d)?
            .into_iter()
            .map(|bytes| M::decode(bytes.as_slice()).map_err(D::Error::custom))
            .collect()
    }
}

/// A protobuf enum held as its Rust enum (sent as its number).
pub mod proto_enum {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes.
    pub fn serialize<E: Copy + Into<i32>, S: Serializer>(
        value: &E,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_i32((*value).into())
    }

    /// Deserializes.
    pub fn deserialize<'de, E: TryFrom<i32>, D: Deserializer<'de>>(d: D) -> Result<E, D::Error> {
        let number = i32::deserialize(d)?;
        E::try_from(number).map_err(|_| D::Error::custom(format!("unknown enum value {number}")))
    }
}

/// A history event's attributes (a protobuf oneof), boxed: sent as a `HistoryEvent` holding them.
pub mod attributes {
    use crate::engine::proto::{Attributes, HistoryEvent};
    use prost::Message;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::ByteBuf;

    /// Serializes.
    pub fn serialize<S: Serializer>(attributes: &Attributes, s: S) -> Result<S::Ok, S::Error> {
        let event = HistoryEvent {
            attributes: Some(attributes.clone()),
            ..Default::default()
        };
        serde_bytes::serialize(&event.encode_to_vec(), s)
    }

    /// Deserializes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Box<Attributes>, D::Error> {
        let bytes = ByteBuf::deserialize(d)?;
        HistoryEvent::decode(bytes.as_slice())
            .map_err(D::Error::custom)?
            .attributes
            .map(Box::new)
            .ok_or_else(|| D::Error::custom("history event without attributes"))
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::proto::{command, common, history, Attributes, HistoryEvent};
    use crate::engine::{CompleteWorkflowTask, Reply, Report, Request, StartedWorkflowTask};
    use crate::shard::{Op, OpResult, ShardError};

    fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug>(value: &T) {
        let bytes = bincode::serialize(value).unwrap_or_else(|e| panic!("encode {value:?}: {e}"));
        let back: T =
            bincode::deserialize(&bytes).unwrap_or_else(|e| panic!("decode {value:?}: {e}"));
        assert_eq!(format!("{back:?}"), format!("{value:?}"));
    }

    #[test]
    fn forwarded_ops_and_results_survive_the_trip() {
        let complete = CompleteWorkflowTask {
            scheduled_event_id: 2,
            attempt: 1,
            commands: vec![command::Command {
                command_type: 1,
                attributes: Some(command::command::Attributes::StartTimerCommandAttributes(
                    command::StartTimerCommandAttributes {
                        timer_id: "t".into(),
                        start_to_fire_timeout: crate::engine::proto::duration(1500),
                    },
                )),
                ..Default::default()
            }],
            sticky: Some(("sticky".into(), 5000)),
            ..Default::default()
        };
        round_trip(&Op::Run {
            run_id: "run".into(),
            request: Request::CompleteWorkflowTask(Box::new(complete)),
        });
        round_trip(&Op::Run {
            run_id: String::new(),
            request: Request::Report(Report::ChildClosed {
                initiated_event_id: 5,
                run_id: "child".into(),
                namespace: ("default".into(), "namespace-id".into()),
                close: Box::new(Attributes::ChildWorkflowExecutionCompletedEventAttributes(
                    history::ChildWorkflowExecutionCompletedEventAttributes {
                        result: Some(common::Payloads::default()),
                        initiated_event_id: 5,
                        ..Default::default()
                    },
                )),
            }),
        });
        let started = StartedWorkflowTask {
            scheduled_event_id: 2,
            started_event_id: 3,
            attempt: 2,
            previous_started_event_id: 0,
            scheduled_time_ns: 1,
            started_time_ns: 2,
            transient_events: vec![HistoryEvent {
                event_id: 3,
                ..Default::default()
            }],
            messages: Vec::new(),
        };
        let result: Result<OpResult, ShardError> = Ok(OpResult::Reply {
            run_id: "run".into(),
            reply: Reply::WorkflowTaskStarted(Box::new(started)),
            state: None,
        });
        round_trip(&result);
        round_trip(&Err::<OpResult, _>(ShardError::Unavailable {
            shard: 3,
            reason: "no leader".into(),
        }));
    }
}
