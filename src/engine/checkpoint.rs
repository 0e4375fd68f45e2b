//! The checkpoint file: where recovery starts, and below which the log may be truncated.
//!
//! The file holds two 128-byte slots, at offsets 0 and 4096 (ESE's scheme). Each write goes to the slot *not*
//! holding the newest valid copy and is synced, so a torn write can only damage the slot being written, and
//! the other slot still holds the previous checkpoint. Reading takes the valid slot with the higher sequence.
//!
//! Slot layout (little-endian):
//!
//! ```text
//! off size field
//!   0    8 magic b"MSTORCKP"
//!   8    4 format version (1)
//!  12    4 reserved, zero
//!  16   16 database GUID
//!  32    8 sequence number (+1 per write)
//!  40    8 checkpoint LSN: every record at or below it is durably reflected in the state store
//!  48    8 epoch
//!  56    8 backup LSN: a backup has copied every record below it (0: no backup yet)
//!  64    1 shutdown state: 1 clean, 0 dirty (mounted, or crashed while mounted)
//!  65   59 reserved, zero
//! 124    4 CRC32 of bytes 0..124
//! ```

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::fault::fail_io;
use crate::types::{Guid, Lsn};

/// Name of the checkpoint file inside a database directory.
pub const CHECKPOINT_FILE: &str = "checkpoint";
const MAGIC: [u8; 8] = *b"MSTORCKP";
const VERSION: u32 = 1;
const SLOT_LEN: usize = 128;
const SLOT_STRIDE: u64 = 4096;
const CRC_AT: usize = 124;

/// The contents of one checkpoint slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The database.
    pub guid: Guid,
    /// Incremented on every write; the newer valid slot wins.
    pub sequence: u64,
    /// Every record at or below this LSN is durably reflected in the state store.
    pub lsn: Lsn,
    /// The epoch at the time of writing.
    pub epoch: u64,
    /// A backup holds every record below this LSN (0: none).
    pub backup_lsn: Lsn,
    /// True when written by a clean dismount.
    pub clean: bool,
}

impl Checkpoint {
    /// The first checkpoint of a database directory whose state store was just made (created, seeded from a
    /// snapshot, restored from a backup, or found without its checkpoint file): sequence 0, no backup recorded.
    pub(crate) fn first(guid: Guid, lsn: Lsn, epoch: u64, clean: bool) -> Self {
        Checkpoint { guid, sequence: 0, lsn, epoch, backup_lsn: 0, clean }
    }

    /// Encodes one slot.
    pub fn encode(&self) -> [u8; SLOT_LEN] {
        let mut b = [0u8; SLOT_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[16..32].copy_from_slice(self.guid.as_bytes());
        b[32..40].copy_from_slice(&self.sequence.to_le_bytes());
        b[40..48].copy_from_slice(&self.lsn.to_le_bytes());
        b[48..56].copy_from_slice(&self.epoch.to_le_bytes());
        b[56..64].copy_from_slice(&self.backup_lsn.to_le_bytes());
        b[64] = u8::from(self.clean);
        let crc = crc32fast::hash(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and verifies one slot; `None` when it is not a valid slot.
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < SLOT_LEN || b[0..8] != MAGIC {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
        let crc = u32::from_le_bytes(b[CRC_AT..CRC_AT + 4].try_into().unwrap_or([0; 4]));
        if crc != crc32fast::hash(&b[..CRC_AT]) || b[8..12] != VERSION.to_le_bytes() || b[64] > 1 {
            return None;
        }
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&b[16..32]);
        Some(Checkpoint {
            guid: Guid(guid),
            sequence: u64_at(32),
            lsn: u64_at(40),
            epoch: u64_at(48),
            backup_lsn: u64_at(56),
            clean: b[64] == 1,
        })
    }

    /// Picks the newest valid slot out of a whole checkpoint file image.
    pub fn newest_of(image: &[u8]) -> Option<Self> {
        let a = Checkpoint::decode(image);
        let b = image.get(SLOT_STRIDE as usize..).and_then(Checkpoint::decode);
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.sequence > a.sequence { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

/// The checkpoint file of one database, open for writing.
#[derive(Debug)]
pub struct CheckpointFile {
    file: File,
    path: PathBuf,
    current: Checkpoint,
}

impl CheckpointFile {
    /// Creates the file with `initial` in slot 0 (and syncs it; the caller syncs the directory).
    pub fn create(dir: &Path, initial: Checkpoint) -> Result<Self> {
        let path = dir.join(CHECKPOINT_FILE);
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&path).at(&path)?;
        let mut this = CheckpointFile { file, path, current: Checkpoint { sequence: 0, ..initial } };
        this.write(initial)?;
        Ok(this)
    }

    /// Opens the file and reads the newest valid slot.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join(CHECKPOINT_FILE);
        let file = OpenOptions::new().read(true).write(true).open(&path).at(&path)?;
        let current = read_newest(&file, &path)?;
        Ok(CheckpointFile { file, path, current })
    }

    /// The newest checkpoint.
    pub fn current(&self) -> Checkpoint {
        self.current
    }

    /// The file's path.
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The one checkpoint step, for the engine's writer, recovery and a passive copy alike: makes the state
    /// store durable, then records `next`. That order is what makes a checkpoint true: when it returns `Ok`,
    /// everything up to `next.lsn` is applied in durable state, so the log below it may be truncated.
    pub(crate) fn write_after_sync(&mut self, state: &heed::Env<heed::WithoutTls>, next: Checkpoint) -> Result<()> {
        state.force_sync()?;
        self.write(next)
    }

    /// Durably records `next` (its sequence is assigned here). When this returns `Ok`, the new checkpoint
    /// survives power loss; when it fails, the previous checkpoint is still intact in the other slot.
    pub fn write(&mut self, next: Checkpoint) -> Result<()> {
        let next = Checkpoint { sequence: self.current.sequence + 1, ..next };
        let offset = (next.sequence % 2) * SLOT_STRIDE;
        (|| -> io::Result<()> {
            {
                fail_io!("checkpoint::write");
            }
            self.file.write_all_at(&next.encode(), offset)?;
            fail_io!("checkpoint::sync");
            self.file.sync_data()
        })()
        .at(&self.path)?;
        self.current = next;
        Ok(())
    }
}

/// Reads the newest valid checkpoint of the database in `dir` without opening it for writing.
pub fn read(dir: &Path) -> Result<Checkpoint> {
    let path = dir.join(CHECKPOINT_FILE);
    let file = File::open(&path).at(&path)?;
    read_newest(&file, &path)
}

fn read_newest(file: &File, path: &Path) -> Result<Checkpoint> {
    let mut image = vec![0u8; SLOT_STRIDE as usize + SLOT_LEN];
    let mut filled = 0;
    while filled < image.len() {
        let n = file.read_at(&mut image[filled..], filled as u64).at(path)?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    image.truncate(filled);
    Checkpoint::newest_of(&image).ok_or_else(|| Error::corrupted(path, 0, "neither checkpoint slot is valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(sequence: u64) -> Checkpoint {
        Checkpoint { guid: Guid([3; 16]), sequence, lsn: 99, epoch: 2, backup_lsn: 7, clean: true }
    }

    #[test]
    fn slot_round_trip_and_bit_flips() {
        let b = sample(5).encode();
        assert_eq!(Checkpoint::decode(&b), Some(sample(5)));
        for bit in 0..SLOT_LEN * 8 {
            let mut d = b;
            d[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(Checkpoint::decode(&d), None, "bit {bit}");
        }
    }

    #[test]
    fn newest_valid_slot_wins() {
        let mut image = vec![0u8; SLOT_STRIDE as usize + SLOT_LEN];
        image[..SLOT_LEN].copy_from_slice(&sample(4).encode());
        image[SLOT_STRIDE as usize..].copy_from_slice(&sample(5).encode());
        assert_eq!(Checkpoint::newest_of(&image).map(|c| c.sequence), Some(5));
        image[SLOT_STRIDE as usize + 40] ^= 1; // the newer slot is torn
        assert_eq!(Checkpoint::newest_of(&image).map(|c| c.sequence), Some(4));
    }

    #[test]
    fn alternate_slots_survive_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = CheckpointFile::create(dir.path(), sample(0)).unwrap();
        f.write(Checkpoint { lsn: 200, ..sample(0) }).unwrap();
        assert_eq!(read(dir.path()).unwrap().lsn, 200);
        // Tear the slot that holds the newest copy: the previous one is read.
        let newest_offset = (f.current().sequence % 2) * SLOT_STRIDE;
        let raw = OpenOptions::new().write(true).open(f.path()).unwrap();
        raw.write_all_at(&[0xFF; 16], newest_offset + 32).unwrap();
        assert_eq!(read(dir.path()).unwrap().lsn, 99);
    }
}
