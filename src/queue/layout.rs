//! Where everything lives in a queue's shared file, and how positions are packed.
//!
//! ```text
//! 0        header: sizes, flags, wake-up words (one 4 KiB page)
//! 4096     log table: MAX_LOGS entries of 256 bytes (owner; head; tail), each on its own
//!          cache lines
//! MAPS     log i's chunk map at MAPS + i * MAP_LEN: CHUNKS u32s, one per chunk of positions
//! STATES   log i's chunk states at STATES + i * MAP_LEN: CHUNKS u32s, one per chunk of
//!          memory (see `ChunkState`)
//! DATA     log i's chunks at DATA + i * SPAN: CHUNKS chunks of CHUNK bytes
//! ```
//!
//! A log is one producer process's ring. `head` and `tail` pack an item count (24 bits,
//! wrapping) and a position in 8-byte units (40 bits, wrapping) into one `u64`, so that a
//! consumer claims an item and advances the position with one compare-and-swap, and the
//! count difference `tail - head` is the number of items in the log.
//!
//! Positions only grow; where their bytes live is the chunk map's business: the bytes of
//! position `pos` are at offset `pos % CHUNK` of the log's chunk number
//! `map[(pos / CHUNK) % CHUNKS]`. The producer points each new chunk of positions at a
//! chunk of memory it has free, so that while consumers keep up, the same few chunks go
//! round and round, already in memory and in every process's page tables.

use crate::codec::cbor_string::StringKind;

/// Identifies a multiproc queue file, and its layout version.
/// v7: puts may publish with a plain store, and consumers owe the barriers that makes them
/// need (`Shared::barrier_or_fence`): a v6 consumer runs none, so it must refuse the file.
/// v8: the sleepers flags are a "raised" bit under a generation each raise bumps, wakers
/// lower them only when unchanged, and a wake wakes one sleeper (`sys::sleepers`): a v7
/// sleeper's raise (always 1) could be lowered by a v8 waker that read an earlier value.
/// v9: a frame may pad its payload (the pad in the check word's top bits, see
/// [`pad_for`]), and a lone string's frame holds its bytes without their CBOR header (the
/// kind in the length word's top bits, see [`length_word`]): a v8 consumer would take the
/// pad for the payload's first bytes and the flagged length for a huge one.
pub(crate) const MAGIC: u64 = 0x6d70_7175_6575_0009; // "mpque" v9

/// Header offsets.
pub(crate) const H_MAGIC: usize = 0;
pub(crate) const H_MAXSIZE: usize = 8;
/// Bit 0: shut down; bit 1: immediately (items discarded).
pub(crate) const H_FLAGS: usize = 16;
/// One more than the highest log index ever claimed: consumers scan below it.
pub(crate) const H_USED_LOGS: usize = 20;
/// 1 for a `JoinableQueue`: every put counts its item unfinished (`H_UNFINISHED`), however
/// it was made. Written before `H_MAGIC`, never after.
pub(crate) const H_JOINABLE: usize = 24;
/// Bumped by a put that wakes a getter; getters sleep on it.
pub(crate) const H_ITEMS_SEQ: usize = 64;
/// The getters' sleepers flag: bit 0 "raised", above it a generation bumped by each
/// getter going to sleep (so a waker lowers it only if no getter raised it since it
/// looked; see `sys::sleepers`).
pub(crate) const H_GET_SLEEPERS: usize = 68;
/// Bumped by a get from a bounded queue that wakes a putter; putters sleep on it.
pub(crate) const H_SPACE_SEQ: usize = 128;
/// The putters' sleepers flag, as `H_GET_SLEEPERS`.
pub(crate) const H_PUT_SLEEPERS: usize = 132;
/// The readiness eventfd's state: a generation (bumped by every consumer drain) and, in
/// bit 0, "written since the last drain" (see `signal_events`).
pub(crate) const H_EFD_STATE: usize = 192;
/// JoinableQueue: items put and not yet marked done.
pub(crate) const H_UNFINISHED: usize = 256;
pub(crate) const H_JOIN_SEQ: usize = 264;
pub(crate) const H_JOIN_SLEEPERS: usize = 268;

pub(crate) const FLAG_SHUTDOWN: u32 = 1;
pub(crate) const FLAG_IMMEDIATE: u32 = 2;
/// Set by a consumer whose kernel refused it a barrier in other processes: puts publish
/// with a full barrier of their own from then on (see `Shared::barrier_or_fence`).
pub(crate) const FLAG_FENCED: u32 = 4;

/// How many producer processes may own a log at once.
pub(crate) const MAX_LOGS: usize = 128;
const TABLE: usize = 4096;
const ENTRY: usize = 256;

/// Log entry offsets (relative to the entry).
/// The owner word: the owner's pid, and above it the number of its claim (0: free).
pub(crate) const L_OWNER: usize = 0;
/// Owner's start time (clock ticks since boot), telling a recycled pid apart.
pub(crate) const L_START: usize = 8;
/// Reservations of a bounded queue not yet published (0 or 1 per producer thread), as a
/// `u64`: in the high half the tag of the claim they were made under, in the low half
/// their count.
pub(crate) const L_PENDING: usize = 32;
/// The owner let go of the log while items remained; whoever drains it frees it.
pub(crate) const L_RELEASED: usize = 20;
/// Claims of the log so far: numbers each owner word, so that no two claims have the same.
pub(crate) const L_CLAIMS: usize = 24;
pub(crate) const L_HEAD: usize = 64;
pub(crate) const L_TAIL: usize = 128;
/// While the owner writes a big frame: when it began (`CLOCK_MONOTONIC` nanoseconds, bit 0
/// clear), with bit 0 set by the one consumer that spins for it instead of sleeping; 0
/// otherwise. A hint only, on the tail's cache line, which the owner writes anyway: see
/// `Shared::spin_for_write`. (Layouts before it left the word 0, and ignore it.)
pub(crate) const L_WRITING: usize = 136;
/// Chunks with memory, as the owner last counted them (a trimmer subtracts what it gives
/// back): consumers trim only logs holding many.
pub(crate) const L_HELD: usize = 192;
/// Chunks `L_FRESH..CHUNKS` were never used by the owner: trimmers look below.
pub(crate) const L_FRESH: usize = 196;
/// The consumer trimming the log: its pid, and the low 32 bits of its start time above
/// (0: none).
pub(crate) const L_TRIMMER: usize = 200;

/// The memory of each log: 1 GiB, backed only where chunks are in use or kept.
pub(crate) const SPAN: u64 = 1 << 30;
/// Memory is handed out, reused and given back in chunks this big.
pub(crate) const CHUNK: u64 = 64 * 1024;
/// Chunks per log (a power of two).
pub(crate) const CHUNKS: u64 = SPAN / CHUNK;
const MAPS: usize = 64 * 1024;
pub(crate) const MAP_LEN: usize = CHUNKS as usize * 4;
const STATES: usize = MAPS + MAX_LOGS * MAP_LEN;
pub(crate) const DATA: usize = STATES + MAX_LOGS * MAP_LEN;
/// The whole file.
pub(crate) const FILE_LEN: usize = DATA + MAX_LOGS * SPAN as usize;
/// Free chunks a producer keeps in memory for reuse (4 MiB) before it gives more back.
pub(crate) const KEEP_CHUNKS: usize = 64;

/// An item's frame in a ring: an 8-byte header (the [`length_word`], then a check word
/// whose top bits say the pad), the pad (0-15 bytes, see [`pad_for`]), the payload, padding
/// to 8 bytes.
pub(crate) const FRAME_HEADER: u64 = 8;
/// Payloads this long and longer are padded so that they start aligned.
pub(crate) const ALIGN_FROM: u64 = 1024;
/// What a padded payload is aligned to.
const PAYLOAD_ALIGN: u64 = 16;
/// Where a check word keeps its frame's pad: the top 4 bits.
const PAD_SHIFT: u32 = 28;
const PAD_MASK: u32 = 15;
/// The largest item: a ring must hold it with room to spare.
pub(crate) const MAX_ITEM: u64 = SPAN / 2;
/// The most a log may hold, in bytes: with the chunks at both ends partly used, and a
/// trimmer's run of chunks (64) in the middle of being given back, the backlog never needs
/// more chunks than a log has.
pub(crate) const MAX_BACKLOG: u64 = SPAN - (4 + 65) * CHUNK;

const COUNT_BITS: u32 = 24;
const POS_BITS: u32 = 40;
const POS_MASK: u64 = (1 << POS_BITS) - 1;
const COUNT_MASK: u32 = (1 << COUNT_BITS) - 1;
/// The most items one log may hold (the count difference must not wrap).
pub(crate) const MAX_ITEMS_PER_LOG: u32 = COUNT_MASK - 1;

pub(crate) fn entry(log: usize) -> usize {
    TABLE + log * ENTRY
}

/// Where `log`'s chunk map starts (page-aligned, [`MAP_LEN`] bytes).
pub(crate) fn map_start(log: usize) -> usize {
    MAPS + log * MAP_LEN
}

/// Where `log`'s map entry for the chunk of positions holding `pos` is.
pub(crate) fn map_entry(log: usize, pos: u64) -> usize {
    map_start(log) + ((pos / CHUNK) % CHUNKS) as usize * 4
}

/// Where `log`'s chunk states start (page-aligned, [`MAP_LEN`] bytes).
pub(crate) fn states_start(log: usize) -> usize {
    STATES + log * MAP_LEN
}

/// Where the state of chunk `chunk` of `log`'s memory is.
pub(crate) fn state_entry(log: usize, chunk: u32) -> usize {
    states_start(log) + (u64::from(chunk) % CHUNKS) as usize * 4
}

/// Who may do what with a chunk of a log's memory: the owner and trimming consumers move
/// it between these states, each move a compare-and-swap, so that a consumer gives back
/// only memory that no position at or after the head uses, and the owner never writes
/// where a consumer is giving memory back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkState {
    /// Without memory for all anyone knows; the owner's to take (never used, given back).
    Unused,
    /// Holds the chunk of positions starting at this position.
    Used(u64),
    /// Free, with memory, kept by the owner for reuse. A trimmer may give it back.
    Spare,
    /// A trimmer is giving its memory back; nobody else touches it while the trimmer lives.
    Punching,
    /// A trimmer gave its memory back: as `Unused`.
    Punched,
}

impl ChunkState {
    pub(crate) fn pack(self) -> u32 {
        match self {
            ChunkState::Unused => 0,
            // Positions are 43 bits, chunks 16: the chunk number fits in 27 bits.
            ChunkState::Used(start) => ((start / CHUNK) as u32) << 3 | 1,
            ChunkState::Spare => 2,
            ChunkState::Punching => 3,
            ChunkState::Punched => 4,
        }
    }

    pub(crate) fn unpack(word: u32) -> ChunkState {
        match word & 7 {
            1 => ChunkState::Used(u64::from(word >> 3) * CHUNK),
            2 => ChunkState::Spare,
            3 => ChunkState::Punching,
            4 => ChunkState::Punched,
            // 0, and anything a corrupt word holds: memory the owner re-populates.
            _ => ChunkState::Unused,
        }
    }
}

/// Where chunk `chunk` of `log`'s memory starts (`chunk` is taken modulo [`CHUNKS`], so
/// even a stale map entry stays inside the log).
pub(crate) fn chunk_offset(log: usize, chunk: u32) -> usize {
    DATA + log * SPAN as usize + (u64::from(chunk) % CHUNKS * CHUNK) as usize
}

/// The first position of the chunk of positions holding `pos`.
pub(crate) fn chunk_start(pos: u64) -> u64 {
    pos - pos % CHUNK
}

/// A head or tail: `count` items ever, at byte position `pos` (both wrapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mark {
    pub(crate) count: u32,
    /// In bytes, a multiple of 8, modulo 2^43.
    pub(crate) pos: u64,
}

impl Mark {
    pub(crate) fn unpack(word: u64) -> Mark {
        Mark {
            count: (word >> POS_BITS) as u32 & COUNT_MASK,
            pos: (word & POS_MASK) * 8,
        }
    }

    pub(crate) fn pack(self) -> u64 {
        (u64::from(self.count & COUNT_MASK) << POS_BITS) | ((self.pos / 8) & POS_MASK)
    }

    /// This mark moved past one frame of `size` bytes.
    pub(crate) fn advance(self, size: u64) -> Mark {
        Mark {
            count: self.count.wrapping_add(1) & COUNT_MASK,
            pos: (self.pos + size) & (POS_MASK * 8 + 7),
        }
    }

    /// Items between `self` (a head) and `tail`.
    pub(crate) fn items_to(self, tail: Mark) -> u32 {
        tail.count.wrapping_sub(self.count) & COUNT_MASK
    }

    /// Bytes between `self` (a head) and `tail`.
    pub(crate) fn bytes_to(self, tail: Mark) -> u64 {
        tail.pos.wrapping_sub(self.pos) & (POS_MASK * 8 + 7)
    }
}

/// Bytes between positions `from` and `to` (to ahead of from), wrapping.
pub(crate) fn distance(from: u64, to: u64) -> u64 {
    to.wrapping_sub(from) & (POS_MASK * 8 + 7)
}

/// A position plus `n` bytes, wrapping.
pub(crate) fn forward(pos: u64, n: u64) -> u64 {
    pos.wrapping_add(n) & (POS_MASK * 8 + 7)
}

/// Bytes a frame of a `len`-byte item takes.
pub(crate) fn frame_size(len: u64) -> u64 {
    (FRAME_HEADER + len).div_ceil(8) * 8
}

/// The bytes between the header of a frame at position `pos` and a `len`-byte payload:
/// for a payload of [`ALIGN_FROM`] bytes and more, what puts it at a multiple of
/// [`PAYLOAD_ALIGN`]; none for a smaller one. A 1 MiB body 13 bytes past an 8-aligned position
/// (after a lone string's CBOR header, when frames held it) was copied into and out of the
/// ring 5-10% slower than an aligned one (docs/benchmarks.md).
pub(crate) fn pad_for(pos: u64, len: u64) -> u64 {
    if len < ALIGN_FROM {
        0
    } else {
        let payload = pos + FRAME_HEADER;
        (PAYLOAD_ALIGN - payload % PAYLOAD_ALIGN) % PAYLOAD_ALIGN
    }
}

/// Where a length word keeps what its payload is: the top 2 bits.
const STRING_SHIFT: u32 = 30;

/// A frame's length word: the payload's length (at most [`MAX_ITEM`], 2^29) in the low 30
/// bits, and in the top 2 what it is: 0 an item's whole encoding (or raw bytes); 1 or 2
/// the bytes of a lone byte or text string, stored without their CBOR header, which is
/// 2-9 bytes (of 10 for a 64-byte `ByteBuf`, whose frame then takes 72 bytes, not 80) and
/// follows from the kind and the length.
pub(crate) fn length_word(len: u32, string: Option<StringKind>) -> u32 {
    let kind = match string {
        None => 0,
        Some(StringKind::Bytes) => 1,
        Some(StringKind::Text) => 2,
    };
    len | kind << STRING_SHIFT
}

/// A length word's length and kind of string; `None` for a kind no producer writes.
pub(crate) fn unpack_length_word(word: u32) -> Option<(u32, Option<StringKind>)> {
    let len = word & ((1 << STRING_SHIFT) - 1);
    let string = match word >> STRING_SHIFT {
        0 => None,
        1 => Some(StringKind::Bytes),
        2 => Some(StringKind::Text),
        _ => return None,
    };
    Some((len, string))
}

/// The check word stored after a frame's length word: the frame's pad in the top 4 bits,
/// and below, a hash of the length word, the pad and the position, which a stale or torn
/// header fails.
pub(crate) fn check_word(word: u32, pos: u64, pad: u64) -> u32 {
    let pad = pad as u32 & PAD_MASK;
    // Positions are multiples of 8: in 8-byte units, the 28 bits kept tell apart frames
    // up to 2 GiB of positions apart, more than a log spans.
    let units = (pos / 8) as u32;
    let hash = word.rotate_left(13) ^ units ^ 0x9e37_79b9 ^ pad.wrapping_mul(0x2545_f491);
    (hash & !(PAD_MASK << PAD_SHIFT)) | (pad << PAD_SHIFT)
}

/// The pad that check word `check` says its frame has (whether the word is right is
/// [`check_word`]'s to say).
pub(crate) fn pad_of(check: u32) -> u64 {
    u64::from(check >> PAD_SHIFT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_words_carry_the_kind_of_string() {
        for string in [None, Some(StringKind::Bytes), Some(StringKind::Text)] {
            for len in [0, 64, MAX_ITEM as u32] {
                assert_eq!(
                    unpack_length_word(length_word(len, string)),
                    Some((len, string))
                );
            }
        }
        assert_eq!(unpack_length_word(3 << STRING_SHIFT | 5), None);
    }

    #[test]
    fn marks_pack_and_wrap() {
        let m = Mark {
            count: COUNT_MASK,
            pos: POS_MASK * 8,
        };
        assert_eq!(Mark::unpack(m.pack()), m);
        let next = m.advance(16);
        assert_eq!(next.count, 0);
        assert_eq!(next.pos, 8);
        assert_eq!(m.items_to(next), 1);
        assert_eq!(m.bytes_to(next), 16);
    }

    #[test]
    fn big_payloads_are_aligned_after_their_pad() {
        for pos in (0..64).step_by(8) {
            assert_eq!(pad_for(pos, ALIGN_FROM - 1), 0, "small items: no pad");
            let pad = pad_for(pos, ALIGN_FROM);
            assert!(pad < PAYLOAD_ALIGN);
            assert_eq!((pos + FRAME_HEADER + pad) % PAYLOAD_ALIGN, 0, "pos {pos}");
        }
    }

    #[test]
    fn check_words_carry_the_pad_and_fail_on_another() {
        for pad in 0..PAYLOAD_ALIGN {
            let check = check_word(1 << 20, 4096, pad);
            assert_eq!(pad_of(check), pad);
            for other in (0..PAYLOAD_ALIGN).filter(|&p| p != pad) {
                let forged = (check & !(PAD_MASK << PAD_SHIFT)) | ((other as u32) << PAD_SHIFT);
                assert_ne!(
                    forged,
                    check_word(1 << 20, 4096, other),
                    "pad {pad} as {other}"
                );
            }
        }
        assert_ne!(
            check_word(5, 8, 0),
            check_word(5, 16, 0),
            "the position counts"
        );
        assert_ne!(
            check_word(5, 8, 0),
            check_word(6, 8, 0),
            "the length counts"
        );
    }

    #[test]
    fn frames_are_8_aligned() {
        assert_eq!(frame_size(0), 8);
        assert_eq!(frame_size(1), 16);
        assert_eq!(frame_size(8), 16);
        assert_eq!(frame_size(9), 24);
    }
}
