//! Key encoding. Every key starts with its group id as 8 big-endian bytes, so one group's keys
//! are one contiguous, ordered range in each column family and a range scan or export of a group
//! never touches another group's data.

/// A Raft group: 0 is the metadata group, 1..=N the shards.
pub type GroupId = u64;

/// Length of the group prefix.
pub const GROUP_PREFIX_LEN: usize = 8;

/// The 8-byte prefix shared by all of `group`'s keys.
pub fn group_prefix(group: GroupId) -> [u8; GROUP_PREFIX_LEN] {
    group.to_be_bytes()
}

/// Half-open key range `[start, end)` holding every key of `group`.
pub fn group_range(group: GroupId) -> (Vec<u8>, Vec<u8>) {
    let start = group_prefix(group).to_vec();
    let end = match group.checked_add(1) {
        Some(next) => group_prefix(next).to_vec(),
        None => vec![0xff; GROUP_PREFIX_LEN + 1],
    };
    (start, end)
}

/// Raft log key: group then log index, both big-endian, so entries scan in index order.
pub fn log_key(group: GroupId, index: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&group.to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

/// Decodes the log index from a key made by [`log_key`].
pub fn log_index_of(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(8..16)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Key of one per-group metadata record (`tag` names the record).
pub fn meta_key(group: GroupId, tag: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(GROUP_PREFIX_LEN + tag.len());
    key.extend_from_slice(&group.to_be_bytes());
    key.extend_from_slice(tag);
    key
}

/// Decodes the group id from any key of this module.
pub fn group_of(key: &[u8]) -> Option<GroupId> {
    let bytes: [u8; 8] = key.get(..8)?.try_into().ok()?;
    Some(GroupId::from_be_bytes(bytes))
}

/// Tag byte of the replicated state machine's own records (applied index, membership).
const STATE_SYSTEM: u8 = 0;
/// Tag byte of application keys in the state column family.
const STATE_USER: u8 = 1;

/// Key of a state-machine system record of `group` (inside the group's range, so it is part of
/// every snapshot of the group).
pub fn state_system_key(group: GroupId, name: &[u8]) -> Vec<u8> {
    state_key_with_tag(group, STATE_SYSTEM, name)
}

/// Key of an application key of `group` in the state column family.
pub fn state_user_key(group: GroupId, user_key: &[u8]) -> Vec<u8> {
    state_key_with_tag(group, STATE_USER, user_key)
}

fn state_key_with_tag(group: GroupId, tag: u8, name: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(GROUP_PREFIX_LEN + 1 + name.len());
    key.extend_from_slice(&group.to_be_bytes());
    key.push(tag);
    key.extend_from_slice(name);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_by_group_then_index() {
        let mut keys = vec![log_key(2, 1), log_key(1, 300), log_key(1, 2), log_key(2, 0)];
        keys.sort();
        assert_eq!(
            keys,
            vec![log_key(1, 2), log_key(1, 300), log_key(2, 0), log_key(2, 1)]
        );
        assert_eq!(log_index_of(&log_key(7, 513)), Some(513));
        assert_eq!(group_of(&log_key(7, 513)), Some(7));
    }

    #[test]
    fn group_range_contains_exactly_the_group() {
        let (start, end) = group_range(5);
        let inside = state_user_key(5, &[0xff; 40]);
        assert!(start.as_slice() <= inside.as_slice() && inside < end);
        let next = state_system_key(6, b"");
        assert!(next >= end);
        let (_, last_end) = group_range(u64::MAX);
        assert!(state_user_key(u64::MAX, &[0xff; 3]) < last_end);
    }
}
