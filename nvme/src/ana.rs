//! Asymmetric Namespace Access: ANA states, the ANA log page (LID 0Ch) and
//! its change notice.
//!
//! The log is a 16-byte header and one 32-byte descriptor per ANA group,
//! each followed by the NSIDs of the group (none with RGO). Nothing here
//! caps the number of groups or namespaces: the page is as long as its
//! content, and hosts read it in pieces with the Get Log Page offset.

use crate::bytes::{r16, r32, r64, w16, w32, w64};
use crate::error::{need, ParseError};
use crate::features::{AsyncEvent, AsyncEventType};

/// ANA log header bytes (change count, number of descriptors).
pub const ANA_LOG_HEADER_LEN: usize = 16;
/// ANA group descriptor bytes before its NSID list.
pub const ANA_DESC_LEN: usize = 32;
/// Get Log Page LSP bit 0 for LID 0Ch: Return Groups Only (no NSID lists).
pub const LSP_RGO: u8 = 1 << 0;

u8_enum! {
    /// ANA state of a group as seen through one controller (path).
    pub enum AnaState {
        /// Optimized: the preferred path.
        Optimized = 0x01,
        /// Non-Optimized: serves I/O, at a cost.
        NonOptimized = 0x02,
        /// Inaccessible: I/O fails with ANA Inaccessible.
        Inaccessible = 0x03,
        /// Persistent Loss: I/O fails with ANA Persistent Loss.
        PersistentLoss = 0x04,
        /// Change: in transition; I/O fails with ANA Transition.
        Change = 0x0F,
    }
}

impl AnaState {
    /// SPDK's name for the state (RPC parameters and dumps).
    pub const fn spdk_name(self) -> &'static str {
        match self {
            AnaState::Optimized => "optimized",
            AnaState::NonOptimized => "non_optimized",
            AnaState::Inaccessible => "inaccessible",
            AnaState::PersistentLoss => "persistent_loss",
            AnaState::Change => "change",
        }
    }

    /// The state SPDK's RPCs accept by this name (case-insensitive):
    /// optimized, non_optimized or inaccessible.
    pub fn from_spdk_name(name: &str) -> Option<AnaState> {
        [
            AnaState::Optimized,
            AnaState::NonOptimized,
            AnaState::Inaccessible,
        ]
        .into_iter()
        .find(|s| s.spdk_name().eq_ignore_ascii_case(name))
    }
}

/// The ANA Change notice: read log 0Ch. Dword 0 = 0x000C0302.
pub const ANA_CHANGED: AsyncEvent = AsyncEvent {
    event_type: AsyncEventType::Notice as u8,
    info: crate::features::notice::ANA_CHANGE,
    log_page: 0x0C,
};

/// One ANA group as the log reports it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AnaGroup {
    /// ANA group ID (non-zero).
    pub anagrpid: u32,
    /// Change count of the group.
    pub change_count: u64,
    /// State through the controller reading the log.
    pub state: AnaState,
    /// NSIDs of the group's attached namespaces, ascending.
    pub nsids: Vec<u32>,
}

/// Bytes of the log for `groups` (with or without the NSID lists).
pub fn ana_log_len(groups: &[AnaGroup], rgo: bool) -> usize {
    groups.iter().fold(ANA_LOG_HEADER_LEN, |n, g| {
        n + ANA_DESC_LEN + if rgo { 0 } else { 4 * g.nsids.len() }
    })
}

/// The whole ANA log page. `rgo` leaves out the NSID lists (and reports
/// NNV 0), as Return Groups Only asks. More than 65535 groups cannot be
/// counted in the header; the count saturates and the descriptors are
/// all there.
pub fn write_ana_log(change_count: u64, groups: &[AnaGroup], rgo: bool) -> Vec<u8> {
    let mut out = vec![0u8; ana_log_len(groups, rgo)];
    w64(&mut out, 0, change_count);
    w16(&mut out, 8, u16::try_from(groups.len()).unwrap_or(u16::MAX));
    let mut at = ANA_LOG_HEADER_LEN;
    for g in groups {
        w32(&mut out, at, g.anagrpid);
        let nnv = if rgo { 0 } else { g.nsids.len() };
        w32(&mut out, at + 4, u32::try_from(nnv).unwrap_or(u32::MAX));
        w64(&mut out, at + 8, g.change_count);
        out[at + 16] = g.state.as_u8();
        at += ANA_DESC_LEN;
        for &nsid in g.nsids.iter().take(nnv) {
            w32(&mut out, at, nsid);
            at += 4;
        }
    }
    out
}

/// Parses an ANA log page (host side): the change count and the groups.
/// A state value outside the spec's is an error, as is a page shorter than
/// its descriptors say.
pub fn parse_ana_log(b: &[u8]) -> Result<(u64, Vec<AnaGroup>), ParseError> {
    need(ANA_LOG_HEADER_LEN, b.len())?;
    let change_count = r64(b, 0);
    let n = usize::from(r16(b, 8));
    let mut groups = Vec::new();
    let mut at = ANA_LOG_HEADER_LEN;
    for _ in 0..n {
        need(at + ANA_DESC_LEN, b.len())?;
        let nnv = r32(b, at + 4) as usize;
        let state =
            AnaState::from_u8(b[at + 16] & 0x0f).ok_or(ParseError::Field { offset: at + 16 })?;
        let list_end = nnv
            .checked_mul(4)
            .and_then(|l| l.checked_add(at + ANA_DESC_LEN))
            .ok_or(ParseError::Field { offset: at + 4 })?;
        need(list_end, b.len())?;
        let nsids = (0..nnv)
            .map(|i| r32(b, at + ANA_DESC_LEN + 4 * i))
            .collect();
        groups.push(AnaGroup {
            anagrpid: r32(b, at),
            change_count: r64(b, at + 8),
            state,
            nsids,
        });
        at = list_end;
    }
    Ok((change_count, groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thousand_namespaces_fit_and_parse_back() {
        let groups: Vec<AnaGroup> = (1..=4u32)
            .map(|g| AnaGroup {
                anagrpid: g,
                change_count: 7,
                state: if g == 2 {
                    AnaState::Inaccessible
                } else {
                    AnaState::Optimized
                },
                nsids: (1..=1000u32).filter(|n| n % 4 + 1 == g).collect(),
            })
            .collect();
        let page = write_ana_log(9, &groups, false);
        assert_eq!(page.len(), 16 + 4 * 32 + 1000 * 4);
        let (cc, back) = parse_ana_log(&page).unwrap();
        assert_eq!(cc, 9);
        assert_eq!(back, groups);
        let rgo = write_ana_log(9, &groups, true);
        assert_eq!(rgo.len(), 16 + 4 * 32);
        let (_, back) = parse_ana_log(&rgo).unwrap();
        assert!(back.iter().all(|g| g.nsids.is_empty()));
        assert_eq!(back[1].state, AnaState::Inaccessible);
    }

    #[test]
    fn truncated_or_hostile_pages_are_errors() {
        let groups = [AnaGroup {
            anagrpid: 1,
            change_count: 0,
            state: AnaState::NonOptimized,
            nsids: vec![1, 2],
        }];
        let page = write_ana_log(1, &groups, false);
        assert!(parse_ana_log(&page[..page.len() - 1]).is_err());
        let mut bad = page.clone();
        bad[16 + 4..16 + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_ana_log(&bad).is_err());
        let mut bad = page;
        bad[16 + 16] = 0x07;
        assert!(parse_ana_log(&bad).is_err());
    }

    #[test]
    fn names_and_event_are_spdk_and_spec_values() {
        assert_eq!(
            AnaState::from_spdk_name("Non_Optimized"),
            Some(AnaState::NonOptimized)
        );
        assert_eq!(AnaState::from_spdk_name("change"), None);
        assert_eq!(ANA_CHANGED.to_dw0(), 0x000C_0302);
    }
}
