//! The data lazyfs holds back for one file: writes not yet fsynced, as non-overlapping extents
//! by offset. Reads see the backing file's bytes with these laid over them; an fsync takes them
//! all. Pure (no I/O), so the FUSE glue in `filesystem.rs` stays thin.

use std::collections::BTreeMap;

/// One file's unsynced writes: `offset -> bytes`, never overlapping, adjacent ones merged.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PendingWrites {
    extents: BTreeMap<u64, Vec<u8>>,
    bytes: usize,
}

impl PendingWrites {
    /// Records a write of `data` at `offset`; it replaces whatever pending bytes it covers.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len() as u64;
        self.remove_range(offset, end);
        // Merge with an extent ending exactly at `offset` (appends, as a log writes), and with
        // one starting exactly at `end`.
        let mut start = offset;
        let mut merged = match self.extents.range(..offset).next_back() {
            Some((&before, bytes)) if before + bytes.len() as u64 == offset => {
                start = before;
                self.extents.remove(&before).unwrap_or_default()
            }
            _ => Vec::new(),
        };
        merged.extend_from_slice(data);
        if let Some(after) = self.extents.remove(&end) {
            merged.extend_from_slice(&after);
        }
        self.bytes += data.len();
        self.extents.insert(start, merged);
    }

    /// Copies the pending bytes that fall in `[offset, offset + buffer.len())` over `buffer`.
    pub fn overlay(&self, offset: u64, buffer: &mut [u8]) {
        let end = offset + buffer.len() as u64;
        let first = self
            .extents
            .range(..=offset)
            .next_back()
            .map_or(offset, |(&start, _)| start);
        for (&start, bytes) in self.extents.range(first..end) {
            let from = start.max(offset);
            let to = (start + bytes.len() as u64).min(end);
            if from >= to {
                continue;
            }
            buffer[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&bytes[(from - start) as usize..(to - start) as usize]);
        }
    }

    /// Reads `len` bytes at `offset` of the file as the writer sees it: `backing_size` bytes on
    /// disk (`read_backing` fills a buffer from the backing file at `offset`), these writes over
    /// them, zeros in holes, nothing past the larger of the two ends.
    pub fn read<E>(
        &self,
        offset: u64,
        len: usize,
        backing_size: u64,
        read_backing: impl FnOnce(&mut [u8]) -> Result<(), E>,
    ) -> Result<Vec<u8>, E> {
        let size = self.size(backing_size);
        let available = size.saturating_sub(offset).min(len as u64) as usize;
        let mut buffer = vec![0; available];
        let from_backing = backing_size.saturating_sub(offset).min(available as u64) as usize;
        if from_backing > 0 {
            read_backing(&mut buffer[..from_backing])?;
        }
        self.overlay(offset, &mut buffer);
        Ok(buffer)
    }

    /// The file's size as the writer sees it, given the backing file's.
    pub fn size(&self, backing_size: u64) -> u64 {
        backing_size.max(self.end())
    }

    /// One past the last pending byte (0 if none).
    pub fn end(&self) -> u64 {
        self.extents
            .iter()
            .next_back()
            .map_or(0, |(&start, bytes)| start + bytes.len() as u64)
    }

    /// Drops pending bytes at or past `size` (the file was truncated to it).
    pub fn truncate(&mut self, size: u64) {
        self.remove_range(size, u64::MAX);
    }

    /// Takes every pending extent, in offset order, leaving nothing pending (an fsync).
    pub fn take(&mut self) -> Vec<(u64, Vec<u8>)> {
        self.bytes = 0;
        std::mem::take(&mut self.extents).into_iter().collect()
    }

    /// Pending bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.extents.is_empty()
    }

    /// Removes pending bytes in `[from, to)`, splitting extents that straddle either end.
    fn remove_range(&mut self, from: u64, to: u64) {
        if from >= to {
            return;
        }
        let first = self
            .extents
            .range(..=from)
            .next_back()
            .map_or(from, |(&start, _)| start);
        let starts: Vec<u64> = self.extents.range(first..to).map(|(&s, _)| s).collect();
        for start in starts {
            let Some(mut bytes) = self.extents.remove(&start) else {
                continue;
            };
            let end = start + bytes.len() as u64;
            if end <= from {
                self.extents.insert(start, bytes);
                continue;
            }
            self.bytes -= bytes.len();
            if end > to {
                let tail = bytes.split_off((to - start) as usize);
                self.bytes += tail.len();
                self.extents.insert(to, tail);
            }
            if start < from {
                bytes.truncate((from - start) as usize);
                self.bytes += bytes.len();
                self.extents.insert(start, bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Run with `cargo test -p keel-jepsen lazyfs::pending`.
    use super::*;

    fn read_all(pending: &PendingWrites, backing: &[u8]) -> Vec<u8> {
        let size = pending.size(backing.len() as u64) as usize;
        read_at(pending, backing, 0, size)
    }

    fn read_at(pending: &PendingWrites, backing: &[u8], offset: u64, len: usize) -> Vec<u8> {
        pending
            .read(offset, len, backing.len() as u64, |buffer| {
                let at = offset as usize;
                buffer.copy_from_slice(&backing[at..at + buffer.len()]);
                Ok::<(), ()>(())
            })
            .unwrap()
    }

    #[test]
    fn later_writes_replace_the_bytes_they_overlap() {
        let mut pending = PendingWrites::default();
        pending.write(2, b"aaaa");
        pending.write(4, b"bbbb");
        pending.write(0, b"cc");
        pending.write(3, b"d");
        assert_eq!(read_all(&pending, b""), b"ccadbbbb");
        assert_eq!(pending.bytes(), 8);
        // One write inside another splits it; one covering several swallows them.
        pending.write(20, b"xyzxyz");
        pending.write(22, b"Q");
        assert_eq!(pending.bytes(), 14);
        pending.write(1, &[b'#'; 30]);
        assert_eq!(
            pending.take(),
            vec![(0, [b"c".as_slice(), &[b'#'; 30]].concat())]
        );
    }

    #[test]
    fn appends_merge_into_one_extent() {
        let mut pending = PendingWrites::default();
        for chunk in 0..100u64 {
            pending.write(chunk * 4, b"log.");
        }
        pending.write(1000, b"tail");
        pending.write(996, b"join");
        let extents = pending.take();
        assert_eq!(extents.len(), 2, "{extents:?}");
        assert_eq!(extents[0].0, 0);
        assert_eq!(extents[0].1.len(), 400);
        assert_eq!(extents[1], (996, b"jointail".to_vec()));
    }

    #[test]
    fn reads_lay_pending_bytes_over_backing_bytes_and_zero_fill_holes() {
        let backing = b"0123456789";
        let mut pending = PendingWrites::default();
        pending.write(3, b"ab");
        pending.write(8, b"cdef");
        pending.write(15, b"g");
        assert_eq!(pending.size(10), 16);
        assert_eq!(read_all(&pending, backing), b"012ab567cdef\0\0\0g");
        // A read spanning the end of the backing file and a hole.
        assert_eq!(read_at(&pending, backing, 9, 5), b"def\0\0");
        // Reads past the end return nothing; reads starting inside return what there is.
        assert_eq!(read_at(&pending, backing, 16, 4), b"");
        assert_eq!(read_at(&pending, backing, 14, 100), b"\0g");
        // With nothing pending, a read is the backing file's bytes.
        assert_eq!(read_at(&PendingWrites::default(), backing, 4, 3), b"456");
    }

    #[test]
    fn truncate_trims_pending_extents() {
        let mut pending = PendingWrites::default();
        pending.write(0, b"aaaa");
        pending.write(10, b"bbbb");
        pending.truncate(12);
        assert_eq!(pending.end(), 12);
        assert_eq!(pending.bytes(), 6);
        pending.truncate(2);
        assert_eq!(pending.take(), vec![(0, b"aa".to_vec())]);
        pending.write(5, b"c");
        pending.truncate(0);
        assert!(pending.is_empty());
        assert_eq!(pending.bytes(), 0);
    }

    #[test]
    fn take_answers_exactly_what_was_pending_and_leaves_nothing() {
        let mut pending = PendingWrites::default();
        pending.write(100, b"late");
        pending.write(0, b"early");
        pending.write(2, b"X");
        assert_eq!(
            pending.take(),
            vec![(0, b"eaXly".to_vec()), (100, b"late".to_vec())]
        );
        assert!(pending.is_empty());
        assert_eq!(pending.bytes(), 0);
        assert_eq!(pending.end(), 0);
        assert_eq!(pending.take(), vec![]);
        // After the take, reads see only the (now written back) backing file.
        assert_eq!(read_all(&pending, b"eaXly"), b"eaXly");
    }
}
