//! Key layout of workflow data inside a shard group's state range. Variable-length parts are
//! length-prefixed (u16, big-endian) so that one execution's keys are contiguous and sorted.

/// Current run of a workflow id: `c | ns | wf` -> run id.
const CURRENT: u8 = b'c';
/// Mutable state of a run: `m | ns | wf | run` -> [`crate::engine::MutableState`].
const STATE: u8 = b'm';
/// History event: `e | ns | wf | run | event id (u64 BE)` -> `HistoryEvent` protobuf.
const EVENT: u8 = b'e';
/// Retention index of closed runs: `r | ns | close time (ns, u64 BE) | wf | run` -> empty.
const RETENTION: u8 = b'r';
/// Present once a shard's retention index covers the runs closed before it existed: `R`.
const RETENTION_INDEXED: u8 = b'R';
/// Worker Deployment record in the metadata group: `d | ns | name`.
const DEPLOYMENT: u8 = b'd';
/// Task queue config in the metadata group: `q | ns | type (as text) | name`.
const QUEUE_CONFIG: u8 = b'q';
/// Namespace record in the metadata group: `n | name`.
const NAMESPACE: u8 = b'n';
/// Custom search attributes of a namespace in the metadata group: `s | namespace id`.
const SEARCH_ATTRIBUTES: u8 = b's';
/// The cluster's shard count in the metadata group: `k` -> u64 BE.
const SHARD_COUNT: u8 = b'k';

fn push_part(key: &mut Vec<u8>, part: &str) {
    let len = u16::try_from(part.len()).unwrap_or(u16::MAX);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(&part.as_bytes()[..usize::from(len)]);
}

fn key(tag: u8, parts: &[&str]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + parts.iter().map(|p| p.len() + 2).sum::<usize>() + 8);
    key.push(tag);
    for part in parts {
        push_part(&mut key, part);
    }
    key
}

/// Key of the current-run pointer of a workflow id.
pub fn current(namespace_id: &str, workflow_id: &str) -> Vec<u8> {
    key(CURRENT, &[namespace_id, workflow_id])
}

/// Key of a run's mutable state.
pub fn state(namespace_id: &str, workflow_id: &str, run_id: &str) -> Vec<u8> {
    key(STATE, &[namespace_id, workflow_id, run_id])
}

/// True for the key of a run's mutable state.
pub fn is_state(key: &[u8]) -> bool {
    key.first() == Some(&STATE)
}

/// Range of every mutable state in the shard.
pub fn state_range() -> (Vec<u8>, Vec<u8>) {
    (vec![STATE], vec![STATE + 1])
}

/// Range of every mutable state of one namespace.
pub fn namespace_state_range(namespace_id: &str) -> (Vec<u8>, Vec<u8>) {
    let start = key(STATE, &[namespace_id]);
    let mut end = start.clone();
    end.push(0xff);
    end.push(0xff);
    (start, end)
}

/// Key of one history event.
pub fn event(namespace_id: &str, workflow_id: &str, run_id: &str, event_id: i64) -> Vec<u8> {
    let mut key = event_prefix(namespace_id, workflow_id, run_id);
    key.extend_from_slice(&(event_id.max(0) as u64).to_be_bytes());
    key
}

/// The prefix every event key of a run starts with.
pub fn event_prefix(namespace_id: &str, workflow_id: &str, run_id: &str) -> Vec<u8> {
    key(EVENT, &[namespace_id, workflow_id, run_id])
}

/// Key of a closed run's entry in the retention index.
pub fn retention(
    namespace_id: &str,
    close_time_ns: i64,
    workflow_id: &str,
    run_id: &str,
) -> Vec<u8> {
    let mut key = key(RETENTION, &[namespace_id]);
    key.extend_from_slice(&(close_time_ns.max(0) as u64).to_be_bytes());
    push_part(&mut key, workflow_id);
    push_part(&mut key, run_id);
    key
}

/// Key of the marker that a shard's retention index covers every closed run.
pub fn retention_indexed() -> Vec<u8> {
    vec![RETENTION_INDEXED]
}

/// Range of the retention index entries of one namespace's runs closed before `until_ns`.
pub fn retention_range(namespace_id: &str, until_ns: i64) -> (Vec<u8>, Vec<u8>) {
    let start = key(RETENTION, &[namespace_id]);
    let mut end = start.clone();
    end.extend_from_slice(&(until_ns.max(0) as u64).to_be_bytes());
    (start, end)
}

/// The close time, workflow id and run id of a retention index key.
pub fn parse_retention(key: &[u8]) -> Option<(i64, String, String)> {
    let (&tag, rest) = key.split_first()?;
    if tag != RETENTION {
        return None;
    }
    let (_, rest) = take_part(rest)?;
    let (time, rest) = rest.split_at_checked(8)?;
    let close_time_ns = i64::try_from(u64::from_be_bytes(time.try_into().ok()?)).ok()?;
    let (workflow_id, rest) = take_part(rest)?;
    let (run_id, rest) = take_part(rest)?;
    rest.is_empty()
        .then(|| (close_time_ns, workflow_id.to_string(), run_id.to_string()))
}

fn take_part(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let (len, rest) = bytes.split_at_checked(2)?;
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    let (part, rest) = rest.split_at_checked(len)?;
    Some((std::str::from_utf8(part).ok()?, rest))
}

/// Key range of a run's events with ids in `[from, to)`.
pub fn event_range(
    namespace_id: &str,
    workflow_id: &str,
    run_id: &str,
    from: i64,
    to: i64,
) -> (Vec<u8>, Vec<u8>) {
    (
        event(namespace_id, workflow_id, run_id, from),
        event(namespace_id, workflow_id, run_id, to),
    )
}

/// Key of a Worker Deployment record (metadata group).
pub fn deployment(namespace_id: &str, name: &str) -> Vec<u8> {
    key(DEPLOYMENT, &[namespace_id, name])
}

/// Key of a task queue's config (metadata group); `kind` is its `TaskQueueType` number.
pub fn queue_config(namespace_id: &str, kind: i32, name: &str) -> Vec<u8> {
    key(QUEUE_CONFIG, &[namespace_id, &kind.to_string(), name])
}

/// Range of every task queue config.
pub fn queue_config_range() -> (Vec<u8>, Vec<u8>) {
    (vec![QUEUE_CONFIG], vec![QUEUE_CONFIG + 1])
}

/// The namespace id, `TaskQueueType` and name of a task queue config key.
pub fn parse_queue_config(key: &[u8]) -> Option<(String, i32, String)> {
    let (&tag, rest) = key.split_first()?;
    if tag != QUEUE_CONFIG {
        return None;
    }
    let (namespace_id, rest) = take_part(rest)?;
    let (kind, rest) = take_part(rest)?;
    let (name, rest) = take_part(rest)?;
    let kind = kind.parse().ok()?;
    rest.is_empty()
        .then(|| (namespace_id.to_string(), kind, name.to_string()))
}

/// Range of every Worker Deployment record.
pub fn deployment_range() -> (Vec<u8>, Vec<u8>) {
    (vec![DEPLOYMENT], vec![DEPLOYMENT + 1])
}

/// The namespace id and name of a Worker Deployment key.
pub fn parse_deployment(key: &[u8]) -> Option<(String, String)> {
    let (&tag, rest) = key.split_first()?;
    if tag != DEPLOYMENT {
        return None;
    }
    let (namespace_id, rest) = take_part(rest)?;
    let (name, rest) = take_part(rest)?;
    rest.is_empty()
        .then(|| (namespace_id.to_string(), name.to_string()))
}

/// Key of a namespace record (metadata group).
pub fn namespace(name: &str) -> Vec<u8> {
    key(NAMESPACE, &[name])
}

/// Key of a namespace's custom search attribute registry (metadata group).
pub fn search_attributes(namespace_id: &str) -> Vec<u8> {
    key(SEARCH_ATTRIBUTES, &[namespace_id])
}

/// Key of the cluster's shard count (metadata group).
pub fn shard_count() -> Vec<u8> {
    vec![SHARD_COUNT]
}

/// Range of every namespace record.
pub fn namespace_range() -> (Vec<u8>, Vec<u8>) {
    (vec![NAMESPACE], vec![NAMESPACE + 1])
}

/// The shard group (1..=shards) of a workflow: FNV-1a 64 over namespace id, a zero byte and
/// workflow id, modulo the shard count. Written down in ARCHITECTURE.md; never changes.
pub fn shard_of(namespace_id: &str, workflow_id: &str, shards: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in namespace_id
        .bytes()
        .chain(std::iter::once(0))
        .chain(workflow_id.bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    1 + hash % shards.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_runs_events_sort_by_id_and_stay_inside_its_range() {
        let (start, end) = event_range("ns", "wf", "run", 1, 1000);
        let keys: Vec<_> = [1, 2, 255, 256, 999]
            .iter()
            .map(|id| event("ns", "wf", "run", *id))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert!(keys.iter().all(|k| *k >= start && *k < end));
        assert!(event("ns", "wf", "run2", 1) >= end || event("ns", "wf", "run2", 1) < start);
    }

    #[test]
    fn retention_keys_sort_by_close_time_within_a_namespace_and_parse_back() {
        let early = retention("ns", 5, "wf-b", "run");
        let late = retention("ns", 300, "wf-a", "run");
        assert!(early < late);
        let (start, end) = retention_range("ns", 300);
        assert!(early >= start && early < end);
        assert!(late >= end, "closed at the bound: not yet expired");
        let other = retention("ns2", 5, "wf", "run");
        assert!(other < start || other >= end);
        assert_eq!(
            parse_retention(&late),
            Some((300, "wf-a".to_string(), "run".to_string()))
        );
        assert_eq!(parse_retention(&late[..late.len() - 1]), None);
        assert_eq!(parse_retention(&state("ns", "wf", "run")), None);
        assert_eq!(
            parse_deployment(&deployment("ns", "dep")),
            Some(("ns".to_string(), "dep".to_string()))
        );
        assert_eq!(parse_deployment(&state("ns", "wf", "run")), None);
        assert_eq!(
            parse_queue_config(&queue_config("ns", 2, "q")),
            Some(("ns".to_string(), 2, "q".to_string()))
        );
        assert_eq!(parse_queue_config(&deployment("ns", "dep")), None);
    }

    #[test]
    fn shard_of_is_stable() {
        // Pinned values: changing the hash would move existing workflows to other shards.
        assert_eq!(shard_of("ns", "wf", 16), shard_of("ns", "wf", 16));
        assert_eq!(shard_of("a", "b", 1), 1);
        let spread: std::collections::BTreeSet<u64> = (0..200)
            .map(|i| shard_of("ns", &format!("wf-{i}"), 16))
            .collect();
        assert_eq!(
            spread.len(),
            16,
            "200 ids should reach every one of 16 shards"
        );
    }
}
