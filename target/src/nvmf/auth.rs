//! In-band authentication of queue pairs with DH-HMAC-CHAP (NVMe Base 2.0
//! section 8.13), as SPDK's `lib/nvmf/auth.c` and Linux's
//! `drivers/nvme/target/fabrics-cmd-auth.c` do it.
//!
//! A host listed with a key (`nvmf_subsystem_add_host --dhchap-key`) gets
//! AUTHREQ.ATR in every Connect response, and each of its queues then
//! answers nothing but Authentication Send/Receive (Authentication
//! Required otherwise) until one transaction succeeds:
//!
//! ```text
//! Negotiate --Send(AUTH_Negotiate)--> Challenge --Recv--> Reply
//!   --Send(Reply, response checked)--> Success1 --Recv--> Completed
//!                                         (CVALID: --Recv--> Success2
//!                                          --Send(Success2)--> Completed)
//! any error --> Failure1 --Recv(AUTH_Failure1)--> queue closed
//! ```
//!
//! Each step must come within the controller's KATO (or 120 s without
//! one, SPDK's default) or the queue is closed. A completed queue may be
//! re-authenticated by a new AUTH_Negotiate without losing its state.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pollux_nvme::auth::chap::{response, Mac64, ResponseParams, ROLE_CONTROLLER, ROLE_HOST};
use pollux_nvme::auth::dh::{KeyPair, PRIVATE_KEY_LEN};
use pollux_nvme::auth::msg::{
    AuthId, AuthType, Challenge, Failure, Header, Negotiate, Reply, Success1, Success2,
};
use pollux_nvme::auth::secret::Secret;
use pollux_nvme::auth::{AuthCmd, DhGroupId, FailureReason, HashId};
use pollux_nvme::fabrics::{fctype, FabricsType, FABRICS_OPCODE};
use pollux_nvme::Status;
use rand::RngCore;

use std::cell::{Cell, RefCell};
use std::rc::Weak;

use pollux_poller::Reactor;

use super::command::Outcome;
use super::conn::{CloseReason, Conn};
use super::request::{ReqState, Request};
use super::{NvmfError, NvmfTarget};
use crate::keyring::Key;

/// Step timeout without a KATO (SPDK's `NVMF_AUTH_DEFAULT_KATO_US`).
const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// Hashes in order of preference: the strongest the host offers wins.
const HASH_PREFERENCE: [HashId; 3] = [HashId::Sha512, HashId::Sha384, HashId::Sha256];
/// DH groups likewise, strongest first, null last.
const DHGROUP_PREFERENCE: [DhGroupId; 6] = [
    DhGroupId::Ffdhe8192,
    DhGroupId::Ffdhe6144,
    DhGroupId::Ffdhe4096,
    DhGroupId::Ffdhe3072,
    DhGroupId::Ffdhe2048,
    DhGroupId::Null,
];

fn bit_of(id: u8) -> u8 {
    1 << id
}

/// The target's allowed digests and DH groups (`nvmf_set_config
/// dhchap_digests/dhchap_dhgroups`), as bit masks of the wire IDs. Read
/// by each negotiation; changed by the control plane.
#[derive(Debug)]
pub struct Policy {
    digests: AtomicU8,
    dhgroups: AtomicU8,
}

impl Default for Policy {
    /// Everything, as SPDK's `NVMF_TGT_DEFAULT_DIGESTS/DHGROUPS`.
    fn default() -> Self {
        Policy {
            digests: AtomicU8::new(HashId::ALL.iter().fold(0, |m, h| m | bit_of(h.as_u8()))),
            dhgroups: AtomicU8::new(DhGroupId::ALL.iter().fold(0, |m, g| m | bit_of(g.as_u8()))),
        }
    }
}

impl Policy {
    fn digest_allowed(&self, h: HashId) -> bool {
        self.digests.load(Ordering::Relaxed) & bit_of(h.as_u8()) != 0
    }

    fn dhgroup_allowed(&self, g: DhGroupId) -> bool {
        self.dhgroups.load(Ordering::Relaxed) & bit_of(g.as_u8()) != 0
    }

    /// The allowed digests, in wire ID order.
    pub fn digests(&self) -> Vec<HashId> {
        HashId::ALL
            .iter()
            .copied()
            .filter(|&h| self.digest_allowed(h))
            .collect()
    }

    /// The allowed DH groups, in wire ID order.
    pub fn dhgroups(&self) -> Vec<DhGroupId> {
        DhGroupId::ALL
            .iter()
            .copied()
            .filter(|&g| self.dhgroup_allowed(g))
            .collect()
    }

    /// Replaces the lists given (an empty list is refused by the caller).
    pub fn set(&self, digests: Option<&[HashId]>, dhgroups: Option<&[DhGroupId]>) {
        if let Some(d) = digests {
            let m = d.iter().fold(0, |m, h| m | bit_of(h.as_u8()));
            self.digests.store(m, Ordering::Relaxed);
        }
        if let Some(g) = dhgroups {
            let m = g.iter().fold(0, |m, g| m | bit_of(g.as_u8()));
            self.dhgroups.store(m, Ordering::Relaxed);
        }
    }
}

/// A host's DH-HMAC-CHAP keys on one subsystem.
#[derive(Clone, Debug)]
pub struct HostKeys {
    /// The host's key: the host proves it knows it.
    pub key: Arc<Key>,
    /// The controller's key, for hosts that ask the controller to prove
    /// itself (bidirectional authentication).
    pub ctrlr_key: Option<Arc<Key>>,
}

impl NvmfTarget {
    /// `nvmf_subsystem_add_host` with keys: allows `host` on `nqn` and,
    /// with `keys`, requires it to authenticate. One step under the
    /// control lock, so no host gets in between allowed and keyed.
    pub fn add_host_with_keys(
        &self,
        nqn: &str,
        host: &str,
        keys: Option<HostKeys>,
    ) -> Result<(), NvmfError> {
        let _c = self.control()?;
        let sub = self.get(nqn)?;
        let mut a = sub.access();
        if a.hosts.iter().any(|h| h == host) {
            return Err(NvmfError::HostExists {
                nqn: nqn.to_owned(),
                host: host.to_owned(),
            });
        }
        match keys {
            Some(k) => a.dhchap.insert(host.to_owned(), k),
            None => a.dhchap.remove(host),
        };
        a.hosts.push(host.to_owned());
        drop(a);
        self.shared.discovery_changed();
        Ok(())
    }

    /// `nvmf_subsystem_set_keys`: replaces an allowed host's keys (`None`
    /// drops them: the host then connects without authenticating). Queues
    /// already authenticated stay; the next transaction uses the new keys.
    pub fn set_host_keys(
        &self,
        nqn: &str,
        host: &str,
        keys: Option<HostKeys>,
    ) -> Result<(), NvmfError> {
        let _c = self.control()?;
        let sub = self.get(nqn)?;
        let mut a = sub.access();
        if !a.hosts.iter().any(|h| h == host) {
            return Err(NvmfError::NoSuchHost {
                nqn: nqn.to_owned(),
                host: host.to_owned(),
            });
        }
        match keys {
            Some(k) => a.dhchap.insert(host.to_owned(), k),
            None => a.dhchap.remove(host),
        };
        Ok(())
    }

    /// The target's DH-HMAC-CHAP digests and groups.
    pub fn auth_policy(&self) -> &Policy {
        &self.shared.auth_policy
    }
}

/// The states of one queue pair's transaction (SPDK's
/// `nvmf_qpair_auth_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for AUTH_Negotiate.
    Negotiate,
    /// Negotiated; the host receives the challenge next.
    Challenge,
    /// Challenge sent; waiting for the Reply.
    Reply,
    /// The host's response checked; it receives Success1 next.
    Success1,
    /// Success1 carried our response; waiting for Success2 (or Failure2).
    Success2,
    /// Failed; the host receives AUTH_Failure1 next, then the queue
    /// closes.
    Failure1,
    /// Authenticated.
    Completed,
    /// The host refused our response (Failure2): the queue closes.
    Error,
}

/// What the driver does after an authentication command.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Complete it.
    Complete,
    /// Complete it and close the queue pair (the transaction failed).
    CompleteAndClose(&'static str),
    /// Run `Job` off the reactor (a modular exponentiation takes up to
    /// ~75 ms with ffdhe8192, which would stall every queue pair of the
    /// reactor), then [`QpairAuth::resume`] with its result.
    Offload(Job),
}

/// A Diffie-Hellman computation, run on a worker thread.
pub(super) enum Job {
    /// The controller's key pair for the challenge.
    KeyGen {
        /// Group.
        group: DhGroupId,
        /// The private exponent's randomness.
        random: Box<[u8; PRIVATE_KEY_LEN]>,
    },
    /// The shared secret with the host's public value.
    Derive {
        /// Our key pair.
        kp: Arc<KeyPair>,
        /// The host's value.
        peer: Vec<u8>,
    },
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::KeyGen { group, .. } => write!(f, "KeyGen({})", group.name()),
            Job::Derive { .. } => write!(f, "Derive"),
        }
    }
}

impl PartialEq for Job {
    fn eq(&self, _: &Job) -> bool {
        false
    }
}
impl Eq for Job {}

/// What a [`Job`] produced.
pub(super) enum JobResult {
    /// From [`Job::KeyGen`].
    KeyGen(Result<KeyPair, pollux_nvme::auth::dh::DhError>),
    /// From [`Job::Derive`].
    Derive(Result<Vec<u8>, pollux_nvme::auth::dh::DhError>),
}

impl Job {
    /// Does the computation (on any thread).
    pub fn run(self) -> JobResult {
        match self {
            Job::KeyGen { group, mut random } => {
                let r = KeyPair::generate(group, &random);
                random.fill(0);
                JobResult::KeyGen(r)
            }
            Job::Derive { kp, peer } => JobResult::Derive(kp.shared_secret(&peer)),
        }
    }
}

/// A Reply whose DH shared secret is being computed.
struct PendingReply {
    rval: Vec<u8>,
    cvalid: bool,
    seqnum: u32,
    cval: Vec<u8>,
}

/// One queue pair's authentication.
pub(super) struct QpairAuth {
    state: State,
    /// Passed one transaction: later ones (re-authentication) leave the
    /// queue usable meanwhile.
    authenticated: bool,
    keys: HostKeys,
    hostnqn: String,
    subnqn: String,
    qid: u16,
    tid: u16,
    hash: HashId,
    dhgroup: DhGroupId,
    /// C1, our challenge (HL bytes used).
    cval: [u8; 64],
    /// S1.
    seqnum: u32,
    dh: Option<Arc<KeyPair>>,
    /// The Reply waiting for its DH shared secret.
    pending: Option<PendingReply>,
    /// R2, for Success1 when the host asked for it.
    ctrl_response: Option<Mac64>,
    fail_reason: FailureReason,
    /// A DH job of this queue is in flight: the host must wait for its
    /// command before sending another.
    busy: bool,
    step_timeout: Duration,
    deadline: Instant,
}

impl std::fmt::Debug for QpairAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QpairAuth({:?}, qid {})", self.state, self.qid)
    }
}

/// Whether `sqe` is Authentication Send or Receive.
pub(super) fn is_auth_command(sqe: &pollux_nvme::Sqe) -> bool {
    sqe.opcode() == FABRICS_OPCODE
        && matches!(
            FabricsType::from_u8(fctype(sqe)),
            Some(FabricsType::AuthenticationSend | FabricsType::AuthenticationReceive)
        )
}

impl QpairAuth {
    /// The authentication a new queue of `hostnqn` on `subnqn` needs:
    /// `kato_ms` (0 = none) bounds each step.
    pub fn new(keys: HostKeys, hostnqn: &str, subnqn: &str, qid: u16, kato_ms: u32) -> Self {
        let step_timeout = if kato_ms == 0 {
            DEFAULT_STEP_TIMEOUT
        } else {
            Duration::from_millis(u64::from(kato_ms))
        };
        QpairAuth {
            state: State::Negotiate,
            authenticated: false,
            keys,
            hostnqn: hostnqn.to_owned(),
            subnqn: subnqn.to_owned(),
            qid,
            tid: 0,
            hash: HashId::Sha256,
            dhgroup: DhGroupId::Null,
            cval: [0; 64],
            seqnum: 0,
            dh: None,
            pending: None,
            ctrl_response: None,
            fail_reason: FailureReason::Failed,
            busy: false,
            step_timeout,
            deadline: Instant::now() + step_timeout,
        }
    }

    /// Whether commands other than authentication may run.
    pub fn authenticated(&self) -> bool {
        self.authenticated
    }

    /// Checks the step deadline: `Err` when a first transaction timed out
    /// (the queue closes); a re-authentication that times out is dropped
    /// and the queue stays as it was (SPDK does the same).
    pub fn check_timeout(&mut self, now: Instant) -> Result<(), &'static str> {
        if matches!(self.state, State::Completed) || now <= self.deadline {
            return Ok(());
        }
        if self.authenticated {
            tracing::warn!(qid = self.qid, state = ?self.state, "nvmf auth: re-authentication timed out");
            self.finish();
            return Ok(());
        }
        tracing::warn!(hostnqn = self.hostnqn, qid = self.qid, state = ?self.state, "nvmf auth: authentication timed out");
        Err("authentication")
    }

    fn rearm(&mut self) {
        self.deadline = Instant::now() + self.step_timeout;
    }

    fn finish(&mut self) {
        self.state = State::Completed;
        self.authenticated = true;
        self.dh = None;
        self.pending = None;
        self.ctrl_response = None;
    }

    fn fail1(&mut self, reason: FailureReason) {
        tracing::warn!(hostnqn = self.hostnqn, subnqn = self.subnqn, qid = self.qid,
            state = ?self.state, ?reason, "nvmf auth: authentication failed");
        self.state = State::Failure1;
        self.fail_reason = reason;
    }

    /// Executes Authentication Send or Receive in `req`.
    pub fn execute(&mut self, req: &mut Request, policy: &Policy) -> Next {
        // One transaction step at a time: a second command while a DH
        // job runs would only race it (and spawn more work).
        if self.busy {
            req.fail(Status::COMMAND_SEQUENCE_ERROR.with_dnr());
            return Next::Complete;
        }
        let next = self.execute_step(req, policy);
        self.busy = matches!(next, Next::Offload(_));
        next
    }

    fn execute_step(&mut self, req: &mut Request, policy: &Policy) -> Next {
        let cmd = match AuthCmd::parse(&req.sqe) {
            Ok(c) if c.is_dhchap() && c.len == req.xfer_len => c,
            _ => {
                req.fail(Status::INVALID_FIELD.with_dnr());
                return Next::Complete;
            }
        };
        if cmd.send {
            if let Some(job) = self.send(req.data(), policy) {
                return Next::Offload(job);
            }
            return self.after_send();
        }
        if self.state == State::Challenge && self.dhgroup != DhGroupId::Null && self.dh.is_none() {
            let mut random = Box::new([0u8; PRIVATE_KEY_LEN]);
            rand::rng().fill_bytes(&mut random[..]);
            return Next::Offload(Job::KeyGen {
                group: self.dhgroup,
                random,
            });
        }
        self.receive_into(req)
    }

    /// Continues the command that returned [`Next::Offload`] with its
    /// job's result.
    pub fn resume(&mut self, req: &mut Request, res: JobResult) -> Next {
        self.busy = false;
        match res {
            JobResult::KeyGen(Ok(kp)) => {
                self.dh = Some(Arc::new(kp));
                self.receive_into(req)
            }
            JobResult::KeyGen(Err(_)) => {
                self.fail1(FailureReason::Failed);
                self.receive_into(req)
            }
            JobResult::Derive(r) => {
                match (self.pending.take(), r) {
                    (Some(p), Ok(secret)) => self.finish_reply(&p, Some(&secret)),
                    (_, Err(e)) => {
                        tracing::warn!(qid = self.qid, error = %e, "nvmf auth: host's DH value refused");
                        self.fail1(FailureReason::Failed);
                    }
                    (None, Ok(_)) => self.fail1(FailureReason::IncorrectProtocolMessage),
                }
                self.after_send()
            }
        }
    }

    fn after_send(&self) -> Next {
        match self.state {
            State::Error => Next::CompleteAndClose("host refused the controller's response"),
            _ => Next::Complete,
        }
    }

    fn receive_into(&mut self, req: &mut Request) -> Next {
        let Some(buf) = req.buf.as_mut() else {
            req.fail(Status::INVALID_FIELD.with_dnr());
            return Next::CompleteAndClose("authentication receive without a buffer");
        };
        let out = buf.as_mut_slice();
        out.fill(0);
        self.receive(out)
    }

    /// An AUTH message from the host; `Some` when its DH part must run
    /// off the reactor first.
    fn send(&mut self, data: &[u8], policy: &Policy) -> Option<Job> {
        let Some(h) = Header::parse(data) else {
            self.fail1(FailureReason::IncorrectPayload);
            return None;
        };
        match h.kind() {
            Some((AuthType::Common, AuthId::Negotiate)) => self.negotiate(data, policy),
            Some((AuthType::Common, AuthId::Failure2)) => self.failure2(data),
            Some((AuthType::Dhchap, AuthId::Reply)) => return self.reply(data),
            Some((AuthType::Dhchap, AuthId::Success2)) => self.success2(data),
            _ => self.fail1(FailureReason::IncorrectProtocolMessage),
        }
        None
    }

    fn negotiate(&mut self, data: &[u8], policy: &Policy) {
        if !matches!(self.state, State::Negotiate | State::Completed) {
            return self.fail1(FailureReason::IncorrectProtocolMessage);
        }
        // A Completed queue starts over (re-authentication).
        self.state = State::Negotiate;
        if let Some(h) = Header::parse(data) {
            self.tid = h.tid;
        }
        let n = match Negotiate::parse(data) {
            Ok(n) => n,
            Err(r) => return self.fail1(r),
        };
        if n.sc_c != 0 {
            return self.fail1(FailureReason::SccMismatch);
        }
        let Some(p) = n.dhchap else {
            return self.fail1(FailureReason::ProtocolUnusable);
        };
        let Some(hash) = HASH_PREFERENCE
            .into_iter()
            .find(|&h| policy.digest_allowed(h) && p.offers_hash(h))
        else {
            return self.fail1(FailureReason::HashUnusable);
        };
        let Some(dhgroup) = DHGROUP_PREFERENCE
            .into_iter()
            .find(|&g| policy.dhgroup_allowed(g) && p.offers_dhgroup(g))
        else {
            return self.fail1(FailureReason::DhGroupUnusable);
        };
        tracing::debug!(
            qid = self.qid,
            tid = n.tid,
            hash = hash.name(),
            dhgroup = dhgroup.name(),
            "nvmf auth: negotiated"
        );
        self.hash = hash;
        self.dhgroup = dhgroup;
        self.state = State::Challenge;
        self.rearm();
    }

    fn reply(&mut self, data: &[u8]) -> Option<Job> {
        if self.state != State::Reply {
            self.fail1(FailureReason::IncorrectProtocolMessage);
            return None;
        }
        let r = match Reply::parse(data, self.hash) {
            Ok(r) => r,
            Err(e) => {
                self.fail1(e);
                return None;
            }
        };
        if r.tid != self.tid {
            self.fail1(FailureReason::IncorrectPayload);
            return None;
        }
        let p = PendingReply {
            rval: r.rval.to_vec(),
            cvalid: r.cvalid,
            seqnum: r.seqnum,
            cval: r.cval.to_vec(),
        };
        match (&self.dh, r.dhv.is_empty()) {
            (None, true) => self.finish_reply(&p, None),
            (None, false) | (Some(_), true) => self.fail1(FailureReason::IncorrectPayload),
            (Some(kp), false) => {
                let job = Job::Derive {
                    kp: kp.clone(),
                    peer: r.dhv.to_vec(),
                };
                self.pending = Some(p);
                return Some(job);
            }
        }
        None
    }

    /// The Reply's checks once the DH shared secret is known.
    fn finish_reply(&mut self, r: &PendingReply, dh_secret: Option<&[u8]>) {
        let Some(key) = load_secret(&self.keys.key) else {
            return self.fail1(FailureReason::Failed);
        };
        let hl = self.hash.hash_len();
        let p = ResponseParams {
            hash: self.hash,
            seqnum: self.seqnum,
            tid: self.tid,
            scc: 0,
            role: ROLE_HOST,
            nqn1: &self.hostnqn,
            nqn2: &self.subnqn,
        };
        let expected = response(
            key.transformed(&self.hostnqn).as_slice(),
            &p,
            &self.cval[..hl],
            dh_secret,
        );
        if !expected.ct_eq(&r.rval) {
            tracing::warn!(
                hostnqn = self.hostnqn,
                qid = self.qid,
                "nvmf auth: wrong response (wrong secret)"
            );
            return self.fail1(FailureReason::Failed);
        }
        self.ctrl_response = None;
        if r.cvalid {
            let Some(ckey) = self.keys.ctrlr_key.as_ref().and_then(|k| load_secret(k)) else {
                tracing::warn!(hostnqn = self.hostnqn, "nvmf auth: host asked for the controller's response but no controller key is set");
                return self.fail1(FailureReason::Failed);
            };
            // A host that echoes our own challenge would get our
            // response to it for free (a reflection attack).
            if r.cval == self.cval[..hl] {
                return self.fail1(FailureReason::Failed);
            }
            let p = ResponseParams {
                seqnum: r.seqnum,
                role: ROLE_CONTROLLER,
                nqn1: &self.subnqn,
                nqn2: &self.hostnqn,
                ..p
            };
            self.ctrl_response = Some(response(
                ckey.transformed(&self.subnqn).as_slice(),
                &p,
                &r.cval,
                dh_secret,
            ));
        }
        self.state = State::Success1;
        self.rearm();
    }

    fn success2(&mut self, data: &[u8]) {
        if self.state != State::Success2 {
            return self.fail1(FailureReason::IncorrectProtocolMessage);
        }
        match Success2::parse(data) {
            Ok(s) if s.tid == self.tid => {
                tracing::debug!(
                    qid = self.qid,
                    "nvmf auth: bidirectional authentication done"
                );
                self.finish();
            }
            _ => self.fail1(FailureReason::IncorrectPayload),
        }
    }

    fn failure2(&mut self, data: &[u8]) {
        if self.state != State::Success2 {
            return self.fail1(FailureReason::IncorrectProtocolMessage);
        }
        match Failure::parse(data) {
            Ok(f) if f.tid == self.tid && data.len() == pollux_nvme::auth::msg::FAILURE_LEN => {
                tracing::warn!(
                    hostnqn = self.hostnqn,
                    qid = self.qid,
                    rc = f.rc,
                    rce = f.rce,
                    "nvmf auth: the host refused the controller's response"
                );
                self.state = State::Error;
            }
            _ => self.fail1(FailureReason::IncorrectPayload),
        }
    }

    fn receive(&mut self, out: &mut [u8]) -> Next {
        let written = match self.state {
            State::Challenge => self.challenge(out),
            State::Success1 => {
                let hl = self.hash.hash_len();
                let rval = self.ctrl_response.as_ref().map(Mac64::as_slice);
                let r = Success1 {
                    tid: self.tid,
                    hl: hl as u8,
                    rval,
                }
                .write(out);
                if r.is_ok() {
                    if self.ctrl_response.is_some() {
                        self.state = State::Success2;
                        self.rearm();
                    } else {
                        tracing::debug!(qid = self.qid, "nvmf auth: host authenticated");
                        self.finish();
                    }
                }
                r
            }
            State::Failure1 => Err(self.fail_reason),
            _ => Err(FailureReason::IncorrectProtocolMessage),
        };
        match written {
            Ok(_) => Next::Complete,
            Err(reason) => {
                if self.state != State::Failure1 {
                    self.fail1(reason);
                }
                // The message fits any Receive of 8 bytes or more; a host
                // that gave less learns only that the queue closed.
                let _ = Failure::failure1(self.tid, self.fail_reason).write(out);
                Next::CompleteAndClose("authentication failed")
            }
        }
    }

    fn challenge(&mut self, out: &mut [u8]) -> Result<usize, FailureReason> {
        let hl = self.hash.hash_len();
        // The key pair came from a Job (`execute`), except for the null
        // group.
        if (self.dhgroup == DhGroupId::Null) != self.dh.is_none() {
            return Err(FailureReason::Failed);
        }
        let mut rng = rand::rng();
        rng.fill_bytes(&mut self.cval[..hl]);
        // S1 is never 0 (0 means "no sequence number" in a Reply).
        self.seqnum = rng.next_u32().max(1);
        let c = Challenge {
            tid: self.tid,
            hash: self.hash,
            dhgroup: self.dhgroup,
            seqnum: self.seqnum,
            cval: &self.cval[..hl],
            dhv: self.dh.as_deref().map_or(&[][..], KeyPair::public),
        };
        let n = c.write(out)?;
        self.state = State::Reply;
        self.rearm();
        Ok(n)
    }
}

/// DH jobs in flight on this reactor: the connection each completes.
/// Reactor-local, so only the token crosses threads.
#[derive(Default)]
struct Jobs {
    next: Cell<u64>,
    conns: RefCell<Vec<(u64, Weak<RefCell<Conn>>)>>,
}

/// How often a worker retries a full reactor inbox before giving up on
/// the completion (the queue's step deadline then closes it).
const SEND_RETRIES: u32 = 1000;
/// DH jobs running on worker threads at once, target-wide: beyond this
/// (hosts connecting en masse) a job runs on its reactor, as SPDK's do,
/// rather than spawning without bound.
const MAX_WORKERS: usize = 16;
static WORKERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Holds one of the [`MAX_WORKERS`] slots until dropped.
struct WorkerSlot;

impl WorkerSlot {
    fn take() -> Option<WorkerSlot> {
        WORKERS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_WORKERS).then_some(n + 1)
            })
            .ok()
            .map(|_| WorkerSlot)
    }
}

impl Drop for WorkerSlot {
    fn drop(&mut self) {
        WORKERS.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Conn {
    /// The authentication gate in front of the command sets: runs
    /// Authentication Send/Receive and refuses everything else until the
    /// queue authenticated. `None`: not this queue's business (no
    /// authentication required, or already done).
    pub(super) fn auth_gate(&mut self, r: &Reactor, slot: u16) -> Option<Outcome> {
        let (Some(a), Some(ctrl)) = (self.auth.as_deref_mut(), self.phase.ctrl()) else {
            return None;
        };
        let req = &mut self.reqs[slot as usize];
        if !is_auth_command(&req.sqe) {
            if a.authenticated() {
                return None;
            }
            refuse(req);
            return Some(Outcome::Complete);
        }
        // Authentication is admin-queue traffic too: it proves the host
        // alive.
        ctrl.state().last_keep_alive = Instant::now();
        let next = a.execute(req, &self.shared.auth_policy);
        Some(self.auth_next(r, slot, next))
    }

    fn auth_next(&mut self, r: &Reactor, slot: u16, next: Next) -> Outcome {
        match next {
            Next::Complete => Outcome::Complete,
            Next::CompleteAndClose(why) => {
                self.request_close(CloseReason::Auth(why));
                Outcome::Complete
            }
            Next::Offload(job) => {
                let jobs = r.local(|_| Jobs::default());
                let token = jobs.next.get();
                jobs.next.set(token + 1);
                jobs.conns.borrow_mut().push((token, self.me.clone()));
                let (handle, reactor) = (r.handle(), r.index());
                let cell = std::sync::Arc::new(std::sync::Mutex::new(Some(job)));
                let work = cell.clone();
                let spawned = match WorkerSlot::take() {
                    None => Err(()),
                    Some(worker) => std::thread::Builder::new()
                        .name("pollux-dhchap".into())
                        .spawn(move || {
                            let Some(job) = work.lock().ok().and_then(|mut j| j.take()) else {
                                return;
                            };
                            let res = std::sync::Arc::new(std::sync::Mutex::new(Some(job.run())));
                            drop(worker);
                            for _ in 0..SEND_RETRIES {
                                let res = res.clone();
                                let msg = move |r: &Reactor| {
                                    if let Some(res) = res.lock().ok().and_then(|mut g| g.take()) {
                                        job_done(r, token, slot, res);
                                    }
                                };
                                if handle.send(reactor, msg).is_ok() {
                                    return;
                                }
                                std::thread::sleep(Duration::from_millis(1));
                            }
                        })
                        .map(drop)
                        .map_err(drop),
                };
                if spawned.is_err() {
                    // No worker (all busy, or no thread): compute here
                    // rather than fail the host.
                    jobs.conns.borrow_mut().retain(|(t, _)| *t != token);
                    let job = cell.lock().ok().and_then(|mut j| j.take());
                    if let (Some(job), Some(a)) = (job, self.auth.as_deref_mut()) {
                        let next = a.resume(&mut self.reqs[slot as usize], job.run());
                        return self.auth_next(r, slot, next);
                    }
                    self.reqs[slot as usize].fail(Status::INTERNAL_ERROR);
                    return Outcome::Complete;
                }
                self.reqs[slot as usize].outstanding = 1;
                Outcome::Submitted
            }
        }
    }
}

/// On the reactor: a DH job finished for the request in `slot` of the
/// connection registered under `token` (gone if it closed meanwhile).
fn job_done(r: &Reactor, token: u64, slot: u16, res: JobResult) {
    let jobs = r.local(|_| Jobs::default());
    let weak = {
        let mut conns = jobs.conns.borrow_mut();
        let Some(i) = conns.iter().position(|(t, _)| *t == token) else {
            return;
        };
        conns.swap_remove(i).1
    };
    let Some(conn) = weak.upgrade() else {
        return;
    };
    let mut c = conn.borrow_mut();
    let Some(req) = c.reqs.get(slot as usize) else {
        return;
    };
    if req.state() != ReqState::Executing || req.outstanding != 1 {
        return;
    }
    let c = &mut *c;
    let Some(a) = c.auth.as_deref_mut() else {
        return;
    };
    let next = a.resume(&mut c.reqs[slot as usize], res);
    c.reqs[slot as usize].outstanding = 0;
    // `resume` never offloads again, so this completes the command.
    if c.auth_next(r, slot, next) == Outcome::Complete {
        let states = c.states.clone();
        c.reqs[slot as usize].set_state(&states, ReqState::Executed);
        c.process(r, slot);
    }
    c.wake_group();
}

fn load_secret(key: &Key) -> Option<Secret> {
    let text = match key.load() {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(key = key.name(), error = %e, "nvmf auth: cannot load key");
            return None;
        }
    };
    match Secret::parse(&text) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(key = key.name(), error = %e, "nvmf auth: key is not a DH-HMAC-CHAP secret");
            None
        }
    }
}

/// The status of a command a queue that still has to authenticate may
/// not run.
pub(super) fn refuse(req: &mut Request) {
    req.fail(Status::AUTH_REQUIRED.with_dnr());
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use pollux_nvme::auth::dh::DhGroupId as G;
    use pollux_nvme::auth::msg::{DhchapProtocol, FailureReason as R};
    use pollux_nvme::auth::{AuthCmd, SECP_NVME, SPSP};
    use pollux_nvme::Sqe;

    use super::*;
    use crate::keyring::Keyring;
    use crate::nvmf::command::bench::request;

    const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:unit-host";
    const SUB: &str = "nqn.2024-11.dev.pollux:unit";

    struct Keys {
        _dir: tempfile::TempDir,
        ring: Keyring,
        host: Secret,
        ctrl: Secret,
    }

    fn keys() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let ring = Keyring::default();
        let host = Secret::new(Some(HashId::Sha256), &[0x5A; 32]).unwrap();
        let ctrl = Secret::new(Some(HashId::Sha384), &[0xC3; 48]).unwrap();
        for (name, s) in [("host", &host), ("ctrl", &ctrl)] {
            let p = dir.path().join(name);
            std::fs::write(&p, s.to_text()).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            ring.add_file_key(name, &p).unwrap();
        }
        Keys {
            _dir: dir,
            ring,
            host,
            ctrl,
        }
    }

    fn qpair(k: &Keys, bidi: bool) -> QpairAuth {
        let hk = HostKeys {
            key: k.ring.get("host").unwrap(),
            ctrlr_key: bidi.then(|| k.ring.get("ctrl").unwrap()),
        };
        QpairAuth::new(hk, HOST, SUB, 1, 5000)
    }

    fn cmd(send: bool, len: usize) -> Sqe {
        let mut sqe = Sqe::new(FABRICS_OPCODE, 9);
        AuthCmd {
            send,
            secp: SECP_NVME,
            spsp0: SPSP,
            spsp1: SPSP,
            len: len as u32,
        }
        .write(&mut sqe);
        sqe
    }

    /// Executes, running an offloaded DH job inline as the worker
    /// thread would.
    fn drive(a: &mut QpairAuth, p: &Policy, req: &mut Request) -> Next {
        match a.execute(req, p) {
            Next::Offload(job) => {
                let next = a.resume(req, job.run());
                assert!(!matches!(next, Next::Offload(_)), "resume never offloads");
                next
            }
            next => next,
        }
    }

    fn send(a: &mut QpairAuth, p: &Policy, msg: &[u8]) -> Next {
        let mut req = request(cmd(true, msg.len()), msg.len());
        req.put_c2h(msg);
        let next = drive(a, p, &mut req);
        assert!(req.status.is_success(), "{:?}", req.status);
        next
    }

    fn recv(a: &mut QpairAuth, p: &Policy) -> (Vec<u8>, Next) {
        let mut req = request(cmd(false, 4096), 4096);
        let next = drive(a, p, &mut req);
        assert!(req.status.is_success(), "{:?}", req.status);
        (req.data().to_vec(), next)
    }

    fn negotiate(tid: u16) -> Vec<u8> {
        let mut b = vec![0u8; 72];
        Negotiate {
            tid,
            sc_c: 0,
            dhchap: Some(DhchapProtocol::new(HashId::ALL, DhGroupId::ALL)),
        }
        .write(&mut b)
        .unwrap();
        b
    }

    /// A host as Linux's `drivers/nvme/host/auth.c` runs it, with secret
    /// `host_key` and, for bidirectional mode, the controller's `ctrl_key`.
    /// Returns whether the controller's response checked out.
    fn host_transaction(
        a: &mut QpairAuth,
        p: &Policy,
        host_key: &Secret,
        ctrl_key: Option<&Secret>,
    ) -> Result<bool, u8> {
        let tid = 0x4242;
        assert_eq!(send(a, p, &negotiate(tid)), Next::Complete);
        let (buf, next) = recv(a, p);
        if let Ok(f) = Failure::parse(&buf) {
            assert!(matches!(next, Next::CompleteAndClose(_)));
            return Err(f.rce);
        }
        let c = Challenge::parse(&buf).unwrap();
        assert_eq!(c.tid, tid);
        let kp = (c.dhgroup != DhGroupId::Null)
            .then(|| KeyPair::generate(c.dhgroup, &[0x77; PRIVATE_KEY_LEN]).unwrap());
        let dh = kp.as_ref().map(|k| k.shared_secret(c.dhv).unwrap());
        let rp = ResponseParams {
            hash: c.hash,
            seqnum: c.seqnum,
            tid,
            scc: 0,
            role: ROLE_HOST,
            nqn1: HOST,
            nqn2: SUB,
        };
        let r1 = response(
            host_key.transformed(HOST).as_slice(),
            &rp,
            c.cval,
            dh.as_deref(),
        );
        let c2 = vec![0x99u8; c.hash.hash_len()];
        let mut out = vec![0u8; 4096];
        let n = Reply {
            tid,
            rval: r1.as_slice(),
            cvalid: ctrl_key.is_some(),
            seqnum: if ctrl_key.is_some() { 77 } else { 0 },
            cval: &c2,
            dhv: kp.as_ref().map_or(&[][..], |k| k.public()),
        }
        .write(&mut out)
        .unwrap();
        assert_eq!(send(a, p, &out[..n]), Next::Complete);
        let (buf, next) = recv(a, p);
        if let Ok(f) = Failure::parse(&buf) {
            assert!(matches!(next, Next::CompleteAndClose(_)));
            return Err(f.rce);
        }
        let s1 = Success1::parse(&buf).unwrap();
        assert_eq!(s1.hl as usize, c.hash.hash_len());
        let Some(ck) = ctrl_key else {
            assert_eq!(s1.rval, None);
            return Ok(false);
        };
        let rp = ResponseParams {
            seqnum: 77,
            role: ROLE_CONTROLLER,
            nqn1: SUB,
            nqn2: HOST,
            ..rp
        };
        let want = response(ck.transformed(SUB).as_slice(), &rp, &c2, dh.as_deref());
        let ok = s1.rval.is_some_and(|r| want.ct_eq(r));
        let n = if ok {
            Success2 { tid }.write(&mut out).unwrap()
        } else {
            Failure {
                id: AuthId::Failure2,
                tid,
                rc: 1,
                rce: R::Failed.as_u8(),
            }
            .write(&mut out)
            .unwrap()
        };
        let next = send(a, p, &out[..n]);
        Ok(ok && next == Next::Complete)
    }

    fn policy(d: &[HashId], g: &[DhGroupId]) -> Policy {
        let p = Policy::default();
        p.set(Some(d), Some(g));
        p
    }

    #[test]
    fn unidirectional_with_each_hash_and_the_null_group() {
        let k = keys();
        for h in HashId::ALL {
            let p = policy(&[*h], &[G::Null]);
            let mut a = qpair(&k, false);
            assert!(!a.authenticated());
            assert_eq!(host_transaction(&mut a, &p, &k.host, None), Ok(false));
            assert!(a.authenticated());
            assert_eq!(a.hash, *h);
        }
    }

    #[test]
    fn bidirectional_with_ffdhe2048() {
        let k = keys();
        let p = policy(HashId::ALL, &[G::Ffdhe2048]);
        let mut a = qpair(&k, true);
        assert_eq!(
            host_transaction(&mut a, &p, &k.host, Some(&k.ctrl)),
            Ok(true)
        );
        assert!(a.authenticated());
        assert_eq!((a.hash, a.dhgroup), (HashId::Sha512, G::Ffdhe2048));
        // Re-authentication on the same queue works and keeps it usable.
        assert_eq!(
            host_transaction(&mut a, &p, &k.host, Some(&k.ctrl)),
            Ok(true)
        );
        assert!(a.authenticated());
    }

    #[test]
    fn wrong_secret_gets_failure1_and_the_queue_closes() {
        let k = keys();
        let p = policy(&[HashId::Sha256], &[G::Ffdhe2048]);
        let wrong = Secret::new(Some(HashId::Sha256), &[0x11; 32]).unwrap();
        let mut a = qpair(&k, false);
        assert_eq!(
            host_transaction(&mut a, &p, &wrong, None),
            Err(R::Failed.as_u8())
        );
        assert!(!a.authenticated());
    }

    #[test]
    fn host_refuses_a_controller_with_the_wrong_key() {
        let k = keys();
        let p = policy(&[HashId::Sha256], &[G::Null]);
        let wrong = Secret::new(None, &[0x22; 48]).unwrap();
        let mut a = qpair(&k, true);
        assert_eq!(
            host_transaction(&mut a, &p, &k.host, Some(&wrong)),
            Ok(false)
        );
        assert_eq!(a.state, State::Error);
        assert!(!a.authenticated());
        // A host asking for bidirectional mode without a controller key
        // configured is refused.
        let mut a = qpair(&k, false);
        assert_eq!(
            host_transaction(&mut a, &p, &k.host, Some(&k.ctrl)),
            Err(R::Failed.as_u8())
        );
    }

    #[test]
    fn negotiation_failures_and_protocol_errors() {
        let k = keys();
        let p = Policy::default();
        // Receive before Negotiate: out of sequence.
        let mut a = qpair(&k, false);
        let (buf, next) = recv(&mut a, &p);
        assert_eq!(
            Failure::parse(&buf).unwrap().rce,
            R::IncorrectProtocolMessage.as_u8()
        );
        assert!(matches!(next, Next::CompleteAndClose(_)));
        // No common hash.
        let mut a = qpair(&k, false);
        let only = policy(&[HashId::Sha384], &[G::Null]);
        let mut b = vec![0u8; 72];
        Negotiate {
            tid: 1,
            sc_c: 0,
            dhchap: Some(DhchapProtocol::new(&[HashId::Sha256], &[G::Null])),
        }
        .write(&mut b)
        .unwrap();
        send(&mut a, &only, &b);
        let (buf, _) = recv(&mut a, &only);
        assert_eq!(Failure::parse(&buf).unwrap().rce, R::HashUnusable.as_u8());
        // Secure channel concatenation asked for.
        let mut a = qpair(&k, false);
        let mut b = negotiate(1);
        b[6] = 1;
        send(&mut a, &p, &b);
        let (buf, _) = recv(&mut a, &p);
        assert_eq!(Failure::parse(&buf).unwrap().rce, R::SccMismatch.as_u8());
        // Truncated Negotiate.
        let mut a = qpair(&k, false);
        send(&mut a, &p, &negotiate(1)[..40]);
        let (buf, _) = recv(&mut a, &p);
        assert_eq!(
            Failure::parse(&buf).unwrap().rce,
            R::IncorrectPayload.as_u8()
        );
        // Wrong SECP, or TL not the data length: Invalid Field.
        let mut a = qpair(&k, false);
        let mut sqe = cmd(true, 72);
        sqe.as_bytes_mut()[43] = 0xEA;
        let mut req = request(sqe, 72);
        a.execute(&mut req, &p);
        assert_eq!(req.status, Status::INVALID_FIELD.with_dnr());
        let mut req = request(cmd(true, 64), 72);
        a.execute(&mut req, &p);
        assert_eq!(req.status, Status::INVALID_FIELD.with_dnr());
    }

    #[test]
    fn a_first_transaction_times_out_a_reauthentication_does_not() {
        let k = keys();
        let p = policy(&[HashId::Sha256], &[G::Null]);
        let mut a = qpair(&k, false);
        let later = Instant::now() + Duration::from_secs(6);
        assert!(a.check_timeout(Instant::now()).is_ok());
        assert_eq!(a.check_timeout(later), Err("authentication"));
        let mut a = qpair(&k, false);
        host_transaction(&mut a, &p, &k.host, None).unwrap();
        send(&mut a, &p, &negotiate(5));
        assert!(a
            .check_timeout(Instant::now() + Duration::from_secs(6))
            .is_ok());
        assert!(a.authenticated());
        assert_eq!(a.state, State::Completed);
    }

    #[test]
    fn only_authentication_commands_pass_the_gate() {
        assert!(is_auth_command(&cmd(true, 8)));
        assert!(is_auth_command(&cmd(false, 8)));
        assert!(!is_auth_command(&Sqe::new(0x06, 1)));
        let mut req = request(Sqe::new(0x06, 1), 0);
        refuse(&mut req);
        assert_eq!(req.status, Status::AUTH_REQUIRED.with_dnr());
    }

    #[test]
    fn one_step_at_a_time_while_a_dh_job_runs() {
        let k = keys();
        let p = policy(&[HashId::Sha256], &[G::Ffdhe2048]);
        let mut a = qpair(&k, false);
        send(&mut a, &p, &negotiate(3));
        let mut first = request(cmd(false, 4096), 4096);
        let Next::Offload(job) = a.execute(&mut first, &p) else {
            panic!("a DH group's challenge is computed off the reactor");
        };
        let mut second = request(cmd(false, 4096), 4096);
        assert_eq!(a.execute(&mut second, &p), Next::Complete);
        assert_eq!(second.status, Status::COMMAND_SEQUENCE_ERROR.with_dnr());
        assert_eq!(a.resume(&mut first, job.run()), Next::Complete);
        let c = Challenge::parse(first.data()).unwrap();
        assert_eq!((c.tid, c.dhgroup, c.dhv.len()), (3, G::Ffdhe2048, 256));
    }
}
