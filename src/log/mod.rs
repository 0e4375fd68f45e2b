//! The write-ahead log of one database: numbered generations of checksummed records.
//!
//! - [`format`](mod@format): the byte layout of generation headers and record frames (the on-disk spec).
//! - [`generation`]: naming, listing and scanning generation files.
//! - [`writer`]: appending batches and rolling to the next generation.
//! - `reader`: reading records back in large batches for replay (recovery and passive copies).
//! - `truncate`: deleting truncated generations off the thread that truncated them.
//! - [`verify`]: walking a whole log directory and judging it (used by recovery and `mailstore check`).

pub mod format;
pub mod generation;
pub(crate) mod reader;
pub(crate) mod truncate;
pub mod verify;
pub mod writer;

pub use format::MAX_RECORD_LEN;
pub use generation::RecordRef;
pub use writer::LogWriter;
