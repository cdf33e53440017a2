//! Errors from parsing and building NVMe structures (not the TCP codec,
//! which has its own [`crate::tcp::PduError`] that maps to a fatal error
//! status).

use thiserror::Error;

/// Why a command or data structure could not be parsed or built.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ParseError {
    /// The input (or output) buffer is shorter than the structure.
    #[error("buffer too short: need {need} bytes, have {have}")]
    Short {
        /// Bytes the structure occupies.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// The SQE's opcode is not the one this parser handles.
    #[error("unexpected opcode {0:#04x}")]
    Opcode(u8),
    /// The Fabrics command type is not the one this parser handles.
    #[error("unexpected fabrics command type {0:#04x}")]
    FabricsType(u8),
    /// An NQN is empty, too long, or not valid UTF-8.
    #[error("invalid NQN")]
    Nqn,
    /// A field holds a value the spec reserves or forbids; `offset` is the
    /// byte offset of the field within its structure.
    #[error("invalid value in field at byte offset {offset}")]
    Field {
        /// Byte offset of the offending field.
        offset: usize,
    },
    /// More entries than the structure can hold.
    #[error("too many entries: {count} exceeds {max}")]
    TooMany {
        /// Entries supplied.
        count: usize,
        /// Capacity of the structure.
        max: usize,
    },
}

/// Checks that `have >= need`.
pub(crate) fn need(need: usize, have: usize) -> Result<(), ParseError> {
    if have < need {
        Err(ParseError::Short { need, have })
    } else {
        Ok(())
    }
}
