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
