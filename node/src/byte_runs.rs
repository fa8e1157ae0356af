//! Serde helpers for lists of byte strings: each string is written as one run of bytes (one
//! copy) instead of a sequence of single bytes. With bincode both give the same encoding, so
//! stored data is unaffected; single `Vec<u8>` fields use `serde_bytes` directly.

/// `Vec<(Vec<u8>, Vec<u8>)>`.
pub mod pairs {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    /// Key/value pairs.
    type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

    /// Serializes.
    pub fn serialize<S: Serializer>(pairs: &[(Vec<u8>, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(pairs.len()))?;
        for (key, value) in pairs {
            seq.serialize_element(&(Bytes::new(key), Bytes::new(value)))?;
        }
        seq.end()
    }

    /// Deserializes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Pairs, D::Error> {
        let pairs: Vec<(ByteBuf, ByteBuf)> = Deserialize::deserialize(d)?;
        Ok(pairs
            .into_iter()
            .map(|(key, value)| (key.into_vec(), value.into_vec()))
            .collect())
    }
}

/// `Vec<Vec<u8>>`.
pub mod strings {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    /// Serializes.
    pub fn serialize<S: Serializer>(keys: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(keys.len()))?;
        for key in keys {
            seq.serialize_element(Bytes::new(key))?;
        }
        seq.end()
    }

    /// Deserializes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let keys: Vec<ByteBuf> = Deserialize::deserialize(d)?;
        Ok(keys.into_iter().map(ByteBuf::into_vec).collect())
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Plain {
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
        strings: Vec<Vec<u8>>,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Runs {
        #[serde(with = "super::pairs")]
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
        #[serde(with = "super::strings")]
        strings: Vec<Vec<u8>>,
    }

    #[test]
    fn byte_runs_encode_exactly_as_plain_vectors_and_round_trip() {
        let pairs = vec![
            (b"k1".to_vec(), vec![0, 1, 2, 255]),
            (Vec::new(), b"v".to_vec()),
        ];
        let strings = vec![b"a".to_vec(), Vec::new(), vec![7; 300]];
        let plain = bincode::serialize(&Plain {
            pairs: pairs.clone(),
            strings: strings.clone(),
        })
        .expect("plain encodes");
        let runs = Runs { pairs, strings };
        let encoded = bincode::serialize(&runs).expect("runs encode");
        assert_eq!(encoded, plain, "stored data must not change");
        assert_eq!(bincode::deserialize::<Runs>(&plain).expect("decodes"), runs);
    }
}
