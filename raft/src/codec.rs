//! Versioned bincode encoding of Keel's own records (log entries, votes, snapshot records, RPC
//! payloads): one format byte, then bincode. Decoding checks the byte so formats can evolve.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Format byte of every record written by this version.
const FORMAT_V1: u8 = 1;

/// Encodes `value` as format byte + bincode.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_V1];
    // Serializing plain data structures into a Vec cannot fail: bincode only errors on
    // unsupported serde features (none used here) or I/O, and Vec writes never fail.
    if let Err(error) = bincode::serialize_into(&mut out, value) {
        unreachable!("bincode serialization into a Vec failed: {error}");
    }
    out
}

/// Decodes a record written by [`encode`]; the error says what was wrong.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&FORMAT_V1, body)) => bincode::deserialize(body).map_err(|e| e.to_string()),
        Some((format, _)) => Err(format!(
            "unknown record format {format} (this build reads format {FORMAT_V1})"
        )),
        None => Err("empty record".to_string()),
    }
}
