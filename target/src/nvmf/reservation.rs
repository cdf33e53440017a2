//! Reservations of one namespace (NVMe Base 2.0 section 8.19, SPDK's
//! `subsystem.c` rules): registrants keyed by host identifier (the Host ID
//! of Connect, so every controller of a host shares its registration),
//! the reservation and its holder, the conflict check of I/O commands,
//! which hosts a change must be told about (Reservation Notification log
//! pages, delivered by `io_cmd` to the hosts' controllers), and Persist
//! Through Power Loss in SPDK's ptpl JSON file.
//!
//! Reservation commands are rare and run on the reactor of the queue they
//! arrive on, under the namespace's mutex. The I/O path reads one atomic
//! (the type held) and takes the mutex only when a reservation is held,
//! i.e. only hosts that use reservations pay for them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};

use pollux_nvme::opcode::IoOpcode;
use pollux_nvme::reservation::{
    cptpl, notice, parse_keys, racqa, rrega, rrela, RegisteredCtrl, ReservationStatus, ResvCdw10,
    ResvType, CNTLID_NONE, KEYS_LEN, RELEASE_KEY_LEN,
};
use pollux_nvme::Status;
use serde::{Deserialize, Serialize};

/// Registrants a namespace keeps: SPDK's SPDK_NVMF_MAX_NUM_REGISTRANTS, so
/// a ptpl file written by either target loads in the other, and a host
/// cannot grow the list without bound.
const MAX_REGISTRANTS: usize = 16;
/// Largest ptpl file read (16 registrants take about 2 KiB).
const PTPL_FILE_MAX: u64 = 64 * 1024;

/// One registrant.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Registrant {
    hostid: [u8; 16],
    rkey: u64,
    /// Controller that registered (reported; 0 after a restore).
    cntlid: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ResvState {
    /// In registration order (the first is the holder of an
    /// all-registrants reservation, as in SPDK).
    regs: Vec<Registrant>,
    rtype: Option<ResvType>,
    /// Key the reservation was acquired with.
    crkey: u64,
    /// Host holding a single-holder reservation.
    holder: Option<[u8; 16]>,
    gen: u32,
    /// Persist Through Power Loss activated.
    ptpl: bool,
}

impl ResvState {
    fn reg(&self, hostid: &[u8; 16]) -> Option<usize> {
        self.regs.iter().position(|r| &r.hostid == hostid)
    }

    fn is_holder(&self, hostid: &[u8; 16]) -> bool {
        match self.rtype {
            None => false,
            Some(t) if t.all_registrants() => self.reg(hostid).is_some(),
            Some(_) => self.holder.as_ref() == Some(hostid),
        }
    }

    fn release(&mut self) {
        self.rtype = None;
        self.crkey = 0;
        self.holder = None;
    }

    /// Removes registrant `i`; a single holder that goes releases the
    /// reservation, an all-registrants one goes with the last registrant.
    fn remove(&mut self, i: usize) {
        let r = self.regs.remove(i);
        self.gen = self.gen.wrapping_add(1);
        match self.rtype {
            Some(t) if t.all_registrants() && self.regs.is_empty() => self.release(),
            Some(t) if !t.all_registrants() && self.holder == Some(r.hostid) => self.release(),
            _ => {}
        }
    }

    fn remove_by_key(&mut self, rkey: u64, keep: &[u8; 16]) -> usize {
        let mut n = 0;
        while let Some(i) = self
            .regs
            .iter()
            .position(|r| r.rkey == rkey && &r.hostid != keep)
        {
            self.remove(i);
            n += 1;
        }
        n
    }

    fn add(&mut self, hostid: [u8; 16], rkey: u64, cntlid: u16) -> Result<(), Status> {
        if self.regs.len() >= MAX_REGISTRANTS {
            return Err(Status::INTERNAL_ERROR);
        }
        self.regs.push(Registrant {
            hostid,
            rkey,
            cntlid,
        });
        self.gen = self.gen.wrapping_add(1);
        Ok(())
    }
}

/// A Reservation Notification for the controllers of `hostid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notice {
    /// The host told.
    pub hostid: [u8; 16],
    /// Log page type (`pollux_nvme::reservation::notice`).
    pub kind: u8,
}

/// Who is told what about the change from `old` to `new` made by `issuer`
/// (SPDK's choices): hosts unregistered by someone else get Registration
/// Preempted (Reservation Preempted for a Clear); the other registrants
/// get Reservation Released when a reservation that let registrants in
/// goes (or any reservation is preempted away).
fn notices(
    old: &ResvState,
    new: &ResvState,
    op: IoOpcode,
    c: ResvCdw10,
    issuer: &[u8; 16],
) -> Vec<Notice> {
    let clear = op == IoOpcode::ReservationRelease && c.action == rrela::CLEAR;
    let preempt = op == IoOpcode::ReservationAcquire && c.action != racqa::ACQUIRE;
    let mut out: Vec<Notice> = old
        .regs
        .iter()
        .filter(|r| &r.hostid != issuer && new.reg(&r.hostid).is_none())
        .map(|r| Notice {
            hostid: r.hostid,
            kind: if clear {
                notice::RESERVATION_PREEMPTED
            } else {
                notice::REGISTRATION_PREEMPTED
            },
        })
        .collect();
    let released = match old.rtype {
        Some(t) if !clear => {
            let gone = new.rtype.is_none() || new.holder != old.holder || new.rtype != old.rtype;
            gone && (t.registrants_access() || preempt)
        }
        _ => false,
    };
    if released {
        out.extend(
            new.regs
                .iter()
                .filter(|r| &r.hostid != issuer)
                .map(|r| Notice {
                    hostid: r.hostid,
                    kind: notice::RESERVATION_RELEASED,
                }),
        );
    }
    out
}

/// Who sends a reservation or I/O command.
#[derive(Debug, Clone, Copy)]
pub struct Requester {
    /// Host identifier (Connect's HOSTID).
    pub hostid: [u8; 16],
    /// Controller.
    pub cntlid: u16,
}

/// A namespace's reservations.
#[derive(Debug)]
pub struct Reservation {
    /// Type held (0 = none): the I/O path's lock-free fast check.
    held: AtomicU8,
    state: Mutex<ResvState>,
    /// Where the state persists (`--ptpl-file`); PTPL needs one.
    ptpl_file: Option<PathBuf>,
    /// The namespace UUID, recorded as `bdev_uuid` so a file is not
    /// applied to another namespace.
    uuid: String,
}

/// SPDK's ptpl file (`nvmf_ns_reservation_update_json`).
#[derive(Debug, Serialize, Deserialize)]
struct PtplFile {
    ptpl: bool,
    #[serde(default)]
    rtype: u32,
    #[serde(default)]
    crkey: u64,
    #[serde(default)]
    bdev_uuid: String,
    #[serde(default)]
    holder_uuid: String,
    #[serde(default)]
    registrants: Vec<PtplRegistrant>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PtplRegistrant {
    rkey: u64,
    host_uuid: String,
}

fn uuid_text(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let digits: Vec<u8> = text.bytes().filter(|&b| b != b'-').collect();
    if digits.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in digits.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

impl Reservation {
    /// No registrants; with `ptpl_file`, what the file holds when it
    /// exists and has PTPL on (a missing or cleared file is no state, as
    /// in SPDK).
    pub fn new(ptpl_file: Option<PathBuf>, ns_uuid: [u8; 16]) -> Result<Reservation, String> {
        let uuid = uuid_text(&ns_uuid);
        let state = match &ptpl_file {
            Some(p) => load(p, &uuid)?,
            None => ResvState::default(),
        };
        Ok(Reservation {
            held: AtomicU8::new(state.rtype.map_or(0, ResvType::as_u8)),
            state: Mutex::new(state),
            ptpl_file,
            uuid,
        })
    }

    /// The ptpl file, if any.
    pub fn ptpl_file(&self) -> Option<&Path> {
        self.ptpl_file.as_deref()
    }

    fn lock(&self) -> MutexGuard<'_, ResvState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether I/O command `op` from `host` may proceed (Reservation
    /// Conflict otherwise). Lock-free unless a reservation is held.
    #[inline]
    pub fn check_io(&self, host: &[u8; 16], op: IoOpcode) -> Result<(), Status> {
        if self.held.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        self.check_held(host, op)
    }

    #[cold]
    fn check_held(&self, host: &[u8; 16], op: IoOpcode) -> Result<(), Status> {
        let st = self.lock();
        let Some(t) = st.rtype else { return Ok(()) };
        if st.is_holder(host) {
            return Ok(());
        }
        let registrant = st.reg(host).is_some();
        let conflict = match op {
            IoOpcode::Read | IoOpcode::Compare => {
                t.exclusive_access() && !(t.registrants_access() && registrant)
            }
            IoOpcode::Write
            | IoOpcode::Flush
            | IoOpcode::WriteUncorrectable
            | IoOpcode::WriteZeroes
            | IoOpcode::DatasetManagement => !(t.registrants_access() && registrant),
            _ => false,
        };
        if conflict {
            Err(Status::RESERVATION_CONFLICT)
        } else {
            Ok(())
        }
    }

    /// Executes Reservation Register, Acquire or Release (`op`) with
    /// command data `data`.
    pub fn execute(
        &self,
        op: IoOpcode,
        cdw10: ResvCdw10,
        data: &[u8],
        who: Requester,
    ) -> Result<Vec<Notice>, Status> {
        let mut st = self.lock();
        let mut next = st.clone();
        match op {
            IoOpcode::ReservationRegister => self.register(&mut next, cdw10, data, who)?,
            IoOpcode::ReservationAcquire => acquire(&mut next, cdw10, data, who)?,
            IoOpcode::ReservationRelease => release(&mut next, cdw10, data, who)?,
            _ => return Err(Status::INVALID_OPCODE.with_dnr()),
        }
        if next == *st {
            return Ok(Vec::new());
        }
        let notices = notices(&st, &next, op, cdw10, &who.hostid);
        // Durable before it is in force: a host told "registered" finds
        // it registered after a restart.
        if next.ptpl || st.ptpl {
            if let Some(path) = &self.ptpl_file {
                if let Err(e) = save(path, &next, &self.uuid) {
                    tracing::error!(path = %path.display(), error = %e,
                        "nvmf: cannot write the reservation ptpl file");
                    return Err(Status::INTERNAL_ERROR);
                }
            }
        }
        self.held
            .store(next.rtype.map_or(0, ResvType::as_u8), Ordering::Release);
        *st = next;
        Ok(notices)
    }

    fn register(
        &self,
        st: &mut ResvState,
        c: ResvCdw10,
        data: &[u8],
        who: Requester,
    ) -> Result<(), Status> {
        let (crkey, nrkey) =
            parse_keys(data, KEYS_LEN).map_err(|_| Status::INVALID_FIELD.with_dnr())?;
        match c.cptpl {
            cptpl::CLEAR => st.ptpl = false,
            cptpl::PERSIST if self.ptpl_file.is_none() => {
                return Err(Status::INVALID_FIELD.with_dnr())
            }
            cptpl::PERSIST => st.ptpl = true,
            _ => {}
        }
        let reg = st.reg(&who.hostid);
        match c.action {
            rrega::REGISTER => match reg {
                None if nrkey == 0 => return Err(Status::INVALID_FIELD.with_dnr()),
                None => st.add(who.hostid, nrkey, who.cntlid)?,
                // Registering the same key again is not an error.
                Some(i) if st.regs[i].rkey == nrkey => {}
                Some(_) => return Err(Status::RESERVATION_CONFLICT),
            },
            rrega::UNREGISTER => match reg {
                Some(i) if c.iekey || st.regs[i].rkey == crkey => st.remove(i),
                _ => return Err(Status::RESERVATION_CONFLICT),
            },
            rrega::REPLACE => {
                if nrkey == 0 {
                    return Err(Status::INVALID_FIELD.with_dnr());
                }
                match reg {
                    Some(i) if c.iekey || st.regs[i].rkey == crkey => {
                        if st.regs[i].rkey != nrkey {
                            st.regs[i].rkey = nrkey;
                            st.gen = st.gen.wrapping_add(1);
                            // The reservation key is the holder's key:
                            // preempting it names the new one.
                            if st.holder == Some(who.hostid) {
                                st.crkey = nrkey;
                            }
                        }
                    }
                    Some(_) => return Err(Status::RESERVATION_CONFLICT),
                    None if c.iekey => st.add(who.hostid, nrkey, who.cntlid)?,
                    None => return Err(Status::RESERVATION_CONFLICT),
                }
            }
            _ => return Err(Status::INVALID_FIELD.with_dnr()),
        }
        Ok(())
    }

    /// The Reservation Status data structure for Report (extended form).
    pub fn report(&self) -> Vec<u8> {
        let st = self.lock();
        let all = st.rtype.is_some_and(ResvType::all_registrants);
        ReservationStatus {
            gen: st.gen,
            rtype: st.rtype.map_or(0, ResvType::as_u8),
            ptpls: st.ptpl,
            regs: st
                .regs
                .iter()
                .map(|r| RegisteredCtrl {
                    cntlid: if r.cntlid == 0 { CNTLID_NONE } else { r.cntlid },
                    holds: (all && st.rtype.is_some()) || st.holder == Some(r.hostid),
                    hostid: r.hostid,
                    rkey: r.rkey,
                })
                .collect(),
        }
        .write(true)
    }

    /// Whether PTPL is on (Get Features Reservation Persistence).
    pub fn ptpl_active(&self) -> bool {
        self.lock().ptpl
    }
}

fn rtype_of(raw: u8) -> Result<ResvType, Status> {
    ResvType::from_u8(raw).ok_or(Status::INVALID_FIELD.with_dnr())
}

fn acquire(st: &mut ResvState, c: ResvCdw10, data: &[u8], who: Requester) -> Result<(), Status> {
    let (crkey, prkey) =
        parse_keys(data, KEYS_LEN).map_err(|_| Status::INVALID_FIELD.with_dnr())?;
    // IEKEY is reserved for Acquire since NVMe 1.3 (RESCAP bit 7).
    if c.iekey {
        return Err(Status::INVALID_FIELD.with_dnr());
    }
    let rtype = rtype_of(c.rtype)?;
    let Some(i) = st.reg(&who.hostid) else {
        return Err(Status::RESERVATION_CONFLICT);
    };
    if st.regs[i].rkey != crkey {
        return Err(Status::RESERVATION_CONFLICT);
    }
    match c.action {
        racqa::ACQUIRE => {
            if st.is_holder(&who.hostid) && st.rtype == Some(rtype) {
                return Ok(());
            }
            if st.rtype.is_some() {
                return Err(Status::RESERVATION_CONFLICT);
            }
            st.rtype = Some(rtype);
            st.crkey = crkey;
            st.holder = (!rtype.all_registrants()).then_some(who.hostid);
        }
        // Preempt and Abort: commands of preempted hosts already in flight
        // complete; once they have, the preempted hosts' next commands
        // conflict, which is what the abort guarantees.
        racqa::PREEMPT | racqa::PREEMPT_AND_ABORT => match st.rtype {
            None => {
                // No reservation: unregister the hosts with PRKEY.
                st.remove_by_key(prkey, &who.hostid);
            }
            Some(t) if !t.all_registrants() => {
                if st.crkey == prkey {
                    if st.holder != Some(who.hostid) {
                        if let Some(h) = st.holder.and_then(|h| st.reg(&h)) {
                            st.remove(h);
                        }
                        st.remove_by_key(prkey, &who.hostid);
                    }
                    st.rtype = Some(rtype);
                    st.crkey = crkey;
                    st.holder = (!rtype.all_registrants()).then_some(who.hostid);
                    st.gen = st.gen.wrapping_add(1);
                } else if prkey != 0 {
                    st.remove_by_key(prkey, &who.hostid);
                } else {
                    return Err(Status::RESERVATION_CONFLICT);
                }
            }
            Some(_) => {
                if prkey == 0 {
                    // Everyone else goes; the preempter holds the new type.
                    while let Some(j) = st.regs.iter().position(|r| r.hostid != who.hostid) {
                        st.remove(j);
                    }
                    st.rtype = Some(rtype);
                    st.crkey = crkey;
                    st.holder = (!rtype.all_registrants()).then_some(who.hostid);
                    st.gen = st.gen.wrapping_add(1);
                } else if st.remove_by_key(prkey, &who.hostid) == 0 {
                    return Err(Status::RESERVATION_CONFLICT);
                }
            }
        },
        _ => return Err(Status::INVALID_FIELD.with_dnr()),
    }
    Ok(())
}

fn release(st: &mut ResvState, c: ResvCdw10, data: &[u8], who: Requester) -> Result<(), Status> {
    let (crkey, _) =
        parse_keys(data, RELEASE_KEY_LEN).map_err(|_| Status::INVALID_FIELD.with_dnr())?;
    if c.iekey {
        return Err(Status::INVALID_FIELD.with_dnr());
    }
    let Some(i) = st.reg(&who.hostid) else {
        return Err(Status::RESERVATION_CONFLICT);
    };
    if st.regs[i].rkey != crkey {
        return Err(Status::RESERVATION_CONFLICT);
    }
    match c.action {
        rrela::RELEASE => {
            let Some(t) = st.rtype else { return Ok(()) };
            if t.as_u8() != c.rtype {
                return Err(Status::INVALID_FIELD.with_dnr());
            }
            // A registrant that holds nothing releases nothing, without
            // error.
            if st.is_holder(&who.hostid) {
                st.release();
            }
        }
        rrela::CLEAR => {
            st.regs.clear();
            st.release();
            st.gen = st.gen.wrapping_add(1);
        }
        _ => return Err(Status::INVALID_FIELD.with_dnr()),
    }
    Ok(())
}

/// Loads a ptpl file: no file, an empty one (SPDK's "cleared") or PTPL off
/// is no state.
fn load(path: &Path, uuid: &str) -> Result<ResvState, String> {
    let shown = path.display();
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ResvState::default()),
        Err(e) => return Err(format!("ptpl file {shown}: {e}")),
    };
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(f, PTPL_FILE_MAX + 1), &mut text)
        .map_err(|e| format!("ptpl file {shown}: {e}"))?;
    if text.len() as u64 > PTPL_FILE_MAX {
        return Err(format!(
            "ptpl file {shown}: larger than {PTPL_FILE_MAX} bytes"
        ));
    }
    from_text(&text, uuid).map_err(|e| format!("ptpl file {shown}: {e}"))
}

/// The state a ptpl file's text holds (see `load`).
fn from_text(text: &str, uuid: &str) -> Result<ResvState, String> {
    if text.trim().is_empty() {
        return Ok(ResvState::default());
    }
    let file: PtplFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if !file.ptpl || file.registrants.is_empty() {
        return Ok(ResvState::default());
    }
    if file.registrants.len() > MAX_REGISTRANTS {
        return Err(format!("more than {MAX_REGISTRANTS} registrants"));
    }
    if !file.bdev_uuid.eq_ignore_ascii_case(uuid) {
        return Err(format!(
            "it is for namespace {}, not {uuid}",
            file.bdev_uuid
        ));
    }
    let mut st = ResvState {
        ptpl: true,
        ..Default::default()
    };
    for r in &file.registrants {
        let hostid =
            parse_uuid(&r.host_uuid).ok_or_else(|| format!("bad host_uuid {:?}", r.host_uuid))?;
        st.regs.push(Registrant {
            hostid,
            rkey: r.rkey,
            cntlid: 0,
        });
    }
    if file.rtype != 0 {
        let t = u8::try_from(file.rtype)
            .ok()
            .and_then(ResvType::from_u8)
            .ok_or_else(|| format!("bad rtype {}", file.rtype))?;
        if !t.all_registrants() && !st.regs.iter().any(|r| r.rkey == file.crkey) {
            return Err(format!("crkey {} is no registrant's", file.crkey));
        }
        st.rtype = Some(t);
        st.crkey = file.crkey;
        if !t.all_registrants() {
            let h = parse_uuid(&file.holder_uuid)
                .filter(|h| st.regs.iter().any(|r| &r.hostid == h))
                .ok_or_else(|| "the holder is no registrant".to_string())?;
            st.holder = Some(h);
        }
    }
    Ok(st)
}

/// Writes the state as SPDK does (an empty file once PTPL is off),
/// atomically: a temporary file beside it, fsync, rename, fsync of the
/// directory.
fn save(path: &Path, st: &ResvState, uuid: &str) -> std::io::Result<()> {
    let text = to_text(st, uuid)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The ptpl file text of `st`: SPDK's JSON, or nothing once PTPL is off.
fn to_text(st: &ResvState, uuid: &str) -> std::io::Result<String> {
    Ok(if st.ptpl {
        let file = PtplFile {
            ptpl: true,
            rtype: st.rtype.map_or(0, |t| u32::from(t.as_u8())),
            crkey: st.crkey,
            bdev_uuid: uuid.to_owned(),
            holder_uuid: st.holder.as_ref().map(uuid_text).unwrap_or_default(),
            registrants: st
                .regs
                .iter()
                .map(|r| PtplRegistrant {
                    rkey: r.rkey,
                    host_uuid: uuid_text(&r.hostid),
                })
                .collect(),
        };
        serde_json::to_string_pretty(&file).map_err(std::io::Error::other)?
    } else {
        String::new()
    })
}

/// Fuzz body (`target/fuzz` `reservation`): `data` is a ptpl file's text
/// up to the first NUL, then reservation commands from three hosts, 18
/// bytes each (opcode selector, host, CDW10 low and high bytes, 16 key
/// bytes, the last two shared). Nothing may panic, and after every
/// command the state keeps its invariants and survives its own ptpl text.
pub fn fuzz(data: &[u8]) {
    const UUID: &str = "00000000-0000-4000-8000-000000000000";
    let (text, cmds) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let start = std::str::from_utf8(text)
        .ok()
        .and_then(|t| from_text(t, UUID).ok())
        .unwrap_or_default();
    let r = Reservation {
        held: AtomicU8::new(start.rtype.map_or(0, ResvType::as_u8)),
        state: Mutex::new(start),
        // No file (the fuzzer touches no disk): Set PTPL is refused, and
        // the text round trip below stands in for the file of a loaded
        // PTPL state.
        ptpl_file: None,
        uuid: UUID.into(),
    };
    let ops = [
        IoOpcode::ReservationRegister,
        IoOpcode::ReservationAcquire,
        IoOpcode::ReservationRelease,
    ];
    for c in cmds.chunks(18) {
        if c.len() < 4 {
            break;
        }
        let op = ops[usize::from(c[0]) % 3];
        let host = [c[1] % 3; 16];
        let mut sqe = pollux_nvme::Sqe::new(op.as_u8(), 0);
        sqe.set_cdw10(u32::from(c[2]) | u32::from(c[3]) << 8 | u32::from(c[3] & 0xc0) << 24);
        let _ = r.execute(
            op,
            ResvCdw10::parse(&sqe),
            &c[4..],
            Requester {
                hostid: host,
                cntlid: 1,
            },
        );
        for io in [IoOpcode::Read, IoOpcode::Write, IoOpcode::Flush] {
            let _ = r.check_io(&host, io);
        }
        let st = r.lock().clone();
        assert!(st.regs.len() <= MAX_REGISTRANTS);
        if let Some(t) = st.rtype {
            assert!(!st.regs.is_empty(), "a reservation without registrants");
            if !t.all_registrants() {
                let h = st.holder.expect("a single-holder type has a holder");
                assert!(st.reg(&h).is_some(), "the holder is registered");
            }
        }
        assert_eq!(
            r.held.load(Ordering::Relaxed),
            st.rtype.map_or(0, ResvType::as_u8)
        );
        let report = ReservationStatus::parse(&r.report(), true).expect("own report");
        assert_eq!(report.regs.len(), st.regs.len());
        if st.ptpl {
            let text = to_text(&st, UUID).expect("serialisable");
            let back = from_text(&text, UUID).expect("own file");
            assert_eq!(back.regs.len(), st.regs.len());
            assert_eq!((back.rtype, back.holder), (st.rtype, st.holder));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 16] = [0xA; 16];
    const B: [u8; 16] = [0xB; 16];
    const C: [u8; 16] = [0xC; 16];

    fn who(hostid: [u8; 16]) -> Requester {
        Requester { hostid, cntlid: 1 }
    }

    fn keys(a: u64, b: u64) -> Vec<u8> {
        let mut v = a.to_le_bytes().to_vec();
        v.extend_from_slice(&b.to_le_bytes());
        v
    }

    fn cmd(action: u8, rtype: u8) -> ResvCdw10 {
        ResvCdw10 {
            action,
            iekey: false,
            rtype,
            cptpl: 0,
        }
    }

    fn register(r: &Reservation, h: [u8; 16], key: u64) {
        r.execute(
            IoOpcode::ReservationRegister,
            cmd(rrega::REGISTER, 0),
            &keys(0, key),
            who(h),
        )
        .unwrap();
    }

    fn acquire(r: &Reservation, h: [u8; 16], crkey: u64, prkey: u64, act: u8, t: ResvType) {
        r.execute(
            IoOpcode::ReservationAcquire,
            cmd(act, t.as_u8()),
            &keys(crkey, prkey),
            who(h),
        )
        .unwrap();
    }

    fn conflicts(r: &Reservation, h: [u8; 16], op: IoOpcode) -> bool {
        r.check_io(&h, op).is_err()
    }

    #[test]
    fn every_type_restricts_the_hosts_the_spec_says() {
        use IoOpcode::{Read, Write};
        // (type, non-holder registrant read/write conflict, non-registrant read/write)
        let table = [
            (ResvType::WriteExclusive, (false, true), (false, true)),
            (ResvType::ExclusiveAccess, (true, true), (true, true)),
            (
                ResvType::WriteExclusiveRegOnly,
                (false, false),
                (false, true),
            ),
            (
                ResvType::ExclusiveAccessRegOnly,
                (false, false),
                (true, true),
            ),
            (
                ResvType::WriteExclusiveAllRegs,
                (false, false),
                (false, true),
            ),
            (
                ResvType::ExclusiveAccessAllRegs,
                (false, false),
                (true, true),
            ),
        ];
        for (t, reg, unreg) in table {
            let r = Reservation::new(None, [0; 16]).unwrap();
            register(&r, A, 1);
            register(&r, B, 2);
            acquire(&r, A, 1, 0, racqa::ACQUIRE, t);
            assert!(!conflicts(&r, A, Write) && !conflicts(&r, A, Read), "{t:?}");
            assert_eq!(
                (conflicts(&r, B, Read), conflicts(&r, B, Write)),
                reg,
                "{t:?} registrant"
            );
            assert_eq!(
                (conflicts(&r, C, Read), conflicts(&r, C, Write)),
                unreg,
                "{t:?} non-registrant"
            );
            // A second host cannot acquire what is held.
            let e = r.execute(
                IoOpcode::ReservationAcquire,
                cmd(racqa::ACQUIRE, t.as_u8()),
                &keys(2, 0),
                who(B),
            );
            if t.all_registrants() {
                // B already holds an all-registrants reservation of
                // another type: still a conflict.
                let e2 = r.execute(
                    IoOpcode::ReservationAcquire,
                    cmd(racqa::ACQUIRE, ResvType::WriteExclusive.as_u8()),
                    &keys(2, 0),
                    who(B),
                );
                assert!(e.is_ok() && e2.is_err(), "{t:?}");
            } else {
                assert_eq!(e, Err(Status::RESERVATION_CONFLICT), "{t:?}");
            }
        }
    }

    #[test]
    fn preempt_moves_the_reservation_and_unregisters_the_preempted() {
        let r = Reservation::new(None, [0; 16]).unwrap();
        register(&r, A, 1);
        register(&r, B, 2);
        acquire(&r, A, 1, 0, racqa::ACQUIRE, ResvType::WriteExclusive);
        acquire(
            &r,
            B,
            2,
            1,
            racqa::PREEMPT_AND_ABORT,
            ResvType::ExclusiveAccess,
        );
        let st = ReservationStatus::parse(&r.report(), true).unwrap();
        assert_eq!(st.rtype, ResvType::ExclusiveAccess.as_u8());
        assert_eq!(st.regs.len(), 1);
        assert_eq!((st.regs[0].hostid, st.regs[0].holds), (B, true));
        assert!(conflicts(&r, A, IoOpcode::Read));
        // A's key is gone: its commands conflict.
        let e = r.execute(
            IoOpcode::ReservationRelease,
            cmd(rrela::RELEASE, 2),
            &1u64.to_le_bytes(),
            who(A),
        );
        assert_eq!(e, Err(Status::RESERVATION_CONFLICT));
        // Release by the holder, with the wrong type, then right.
        let e = r.execute(
            IoOpcode::ReservationRelease,
            cmd(rrela::RELEASE, 1),
            &2u64.to_le_bytes(),
            who(B),
        );
        assert!(e.unwrap_err().same_code(&Status::INVALID_FIELD));
        r.execute(
            IoOpcode::ReservationRelease,
            cmd(rrela::RELEASE, 2),
            &2u64.to_le_bytes(),
            who(B),
        )
        .unwrap();
        assert!(!conflicts(&r, A, IoOpcode::Write));
    }

    #[test]
    fn preempted_and_released_hosts_are_told() {
        let r = Reservation::new(None, [0; 16]).unwrap();
        register(&r, A, 1);
        register(&r, B, 2);
        register(&r, C, 3);
        acquire(&r, A, 1, 0, racqa::ACQUIRE, ResvType::WriteExclusiveRegOnly);
        // B preempts A: A loses its registration, C learns the
        // reservation it could use went.
        let n = r
            .execute(
                IoOpcode::ReservationAcquire,
                cmd(racqa::PREEMPT, ResvType::WriteExclusive.as_u8()),
                &keys(2, 1),
                who(B),
            )
            .unwrap();
        assert_eq!(
            n,
            vec![
                Notice {
                    hostid: A,
                    kind: notice::REGISTRATION_PREEMPTED
                },
                Notice {
                    hostid: C,
                    kind: notice::RESERVATION_RELEASED
                },
            ]
        );
        // Releasing Write Exclusive tells nobody (registrants had no
        // access through it); Clear tells every other registrant.
        let n = r
            .execute(
                IoOpcode::ReservationRelease,
                cmd(rrela::RELEASE, 1),
                &2u64.to_le_bytes(),
                who(B),
            )
            .unwrap();
        assert!(n.is_empty(), "{n:?}");
        let n = r
            .execute(
                IoOpcode::ReservationRelease,
                cmd(rrela::CLEAR, 0),
                &2u64.to_le_bytes(),
                who(B),
            )
            .unwrap();
        assert_eq!(
            n,
            vec![Notice {
                hostid: C,
                kind: notice::RESERVATION_PREEMPTED
            }]
        );
    }

    #[test]
    fn register_rules_and_clear() {
        let r = Reservation::new(None, [0; 16]).unwrap();
        register(&r, A, 1);
        register(&r, A, 1);
        let e = r.execute(
            IoOpcode::ReservationRegister,
            cmd(rrega::REGISTER, 0),
            &keys(0, 5),
            who(A),
        );
        assert_eq!(e, Err(Status::RESERVATION_CONFLICT));
        // Replace needs the current key unless IEKEY.
        let e = r.execute(
            IoOpcode::ReservationRegister,
            cmd(rrega::REPLACE, 0),
            &keys(9, 5),
            who(A),
        );
        assert_eq!(e, Err(Status::RESERVATION_CONFLICT));
        let mut ie = cmd(rrega::REPLACE, 0);
        ie.iekey = true;
        r.execute(IoOpcode::ReservationRegister, ie, &keys(9, 5), who(A))
            .unwrap();
        // PTPL without a file is refused.
        let mut p = cmd(rrega::REGISTER, 0);
        p.cptpl = cptpl::PERSIST;
        let e = r.execute(IoOpcode::ReservationRegister, p, &keys(0, 5), who(A));
        assert!(e.unwrap_err().same_code(&Status::INVALID_FIELD));
        register(&r, B, 7);
        acquire(&r, B, 7, 0, racqa::ACQUIRE, ResvType::WriteExclusiveAllRegs);
        r.execute(
            IoOpcode::ReservationRelease,
            cmd(rrela::CLEAR, 0),
            &5u64.to_le_bytes(),
            who(A),
        )
        .unwrap();
        let st = ReservationStatus::parse(&r.report(), true).unwrap();
        assert_eq!((st.rtype, st.regs.len()), (0, 0));
        // Short data is an invalid field, not a panic.
        let e = r.execute(
            IoOpcode::ReservationRegister,
            cmd(rrega::REGISTER, 0),
            &[0; 4],
            who(A),
        );
        assert!(e.unwrap_err().same_code(&Status::INVALID_FIELD));
    }

    #[test]
    fn fuzz_body_on_random_commands_and_files() {
        use rand::{Rng, RngCore, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(13);
        let file = format!(
            r#"{{"ptpl": true, "rtype": 1, "crkey": 5, "bdev_uuid": "00000000-0000-4000-8000-000000000000",
               "holder_uuid": "{}", "registrants": [{{"rkey": 5, "host_uuid": "{}"}}]}}"#,
            uuid_text(&[1; 16]),
            uuid_text(&[1; 16])
        );
        for i in 0..300 {
            let mut cmds = vec![0u8; rng.random_range(0..400)];
            rng.fill_bytes(&mut cmds);
            // Small keys, so commands name each other's keys often.
            for c in cmds.chunks_mut(18) {
                for k in c.iter_mut().skip(5).step_by(8) {
                    *k %= 3;
                }
                for k in c.iter_mut().skip(4) {
                    if rng.random_range(0..4) != 0 {
                        *k &= 3;
                    }
                }
            }
            let mut input = if i % 2 == 0 {
                file.clone().into_bytes()
            } else {
                Vec::new()
            };
            input.push(0);
            input.extend_from_slice(&cmds);
            fuzz(&input);
        }
        fuzz(b"{not json");
    }

    #[test]
    fn ptpl_file_survives_a_restart_in_spdk_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ns1.ptpl");
        let uuid = [0x42; 16];
        let r = Reservation::new(Some(path.clone()), uuid).unwrap();
        let mut p = cmd(rrega::REGISTER, 0);
        p.cptpl = cptpl::PERSIST;
        r.execute(IoOpcode::ReservationRegister, p, &keys(0, 0x11), who(A))
            .unwrap();
        register(&r, B, 0x22);
        acquire(
            &r,
            A,
            0x11,
            0,
            racqa::ACQUIRE,
            ResvType::ExclusiveAccessRegOnly,
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["ptpl"], true);
        assert_eq!(v["rtype"], 4);
        assert_eq!(v["crkey"], 0x11);
        assert_eq!(v["holder_uuid"], uuid_text(&A));
        assert_eq!(v["registrants"].as_array().unwrap().len(), 2);
        drop(r);
        let again = Reservation::new(Some(path.clone()), uuid).unwrap();
        assert_eq!(again.report(), {
            // The same state, but controller IDs are not kept.
            let st = ReservationStatus::parse(&again.report(), true).unwrap();
            assert_eq!(st.rtype, 4);
            assert!(st.regs.iter().all(|r| r.cntlid == CNTLID_NONE));
            assert!(st.regs[0].holds && !st.regs[1].holds);
            again.report()
        });
        assert!(conflicts(&again, C, IoOpcode::Read));
        assert!(!conflicts(&again, B, IoOpcode::Write));
        // Another namespace's file is refused; a garbage file too.
        assert!(Reservation::new(Some(path.clone()), [1; 16]).is_err());
        std::fs::write(&path, "{\"ptpl\": tru").unwrap();
        assert!(Reservation::new(Some(path.clone()), uuid).is_err());
        // Clearing PTPL empties the file, which loads as nothing.
        std::fs::remove_file(&path).unwrap();
        let r = Reservation::new(Some(path.clone()), uuid).unwrap();
        let mut p = cmd(rrega::REGISTER, 0);
        p.cptpl = cptpl::PERSIST;
        r.execute(IoOpcode::ReservationRegister, p, &keys(0, 1), who(A))
            .unwrap();
        let mut c = cmd(rrega::REGISTER, 0);
        c.cptpl = cptpl::CLEAR;
        r.execute(IoOpcode::ReservationRegister, c, &keys(0, 1), who(A))
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        let r = Reservation::new(Some(path), uuid).unwrap();
        assert!(ReservationStatus::parse(&r.report(), true)
            .unwrap()
            .regs
            .is_empty());
    }
}
