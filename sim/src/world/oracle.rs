//! The oracle state every event updates, the invariants checked after each one, and the
//! checks at the end of a run.

use super::*;

/// A refresh of the same credential starting this soon after a delivered refresh answer counts
/// as a duplicate refresh.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10);

/// A refresh answer (or the login) that reached a process: what the credential holds.
#[derive(Clone, Debug)]
pub(crate) struct Delivered {
    pub(crate) at: MonoTime,
    pub(crate) proc: usize,
    pub(crate) access: String,
    pub(crate) refresh: Option<String>,
    /// The provider's record of `access` when it was delivered: its family and true expiry
    /// (`None`: a token the provider never issued, never valid).
    pub(crate) record: Option<(FamilyId, MonoTime)>,
}

pub(super) const DELIVERED_KEPT: usize = 8;

/// For one credential's kept answers: when the newest was delivered, and the latest true
/// expiry among those of issued access tokens ([`MonoTime::ZERO`] if none).
pub(crate) fn delivered_span(kept: &VecDeque<Delivered>) -> (MonoTime, MonoTime) {
    kept.iter()
        .fold((MonoTime::ZERO, MonoTime::ZERO), |(at, until), d| {
            (
                at.max(d.at),
                match d.record {
                    Some((_, expires)) => until.max(expires),
                    None => until,
                },
            )
        })
}

/// Trace ring, determinism hash and secret scan.
#[derive(Debug)]
pub struct Trace {
    pub(crate) ring: VecDeque<(MonoTime, String)>,
    /// A hash of every traced line and serve, in order (eight bytes per step: xor, odd
    /// multiply, rotate).
    pub hash: u64,
    /// Lines traced.
    pub lines: u64,
    pub(crate) print: bool,
}

impl Trace {
    pub(crate) fn new(print: bool) -> Self {
        Trace {
            ring: VecDeque::new(),
            hash: 0xcbf2_9ce4_8422_2325,
            lines: 0,
            print,
        }
    }

    /// Mixes `bytes` into the hash eight at a time: each little-endian word (the last one
    /// zero-padded, with the count of its bytes in the top three bits) is xored into the
    /// state, which is then multiplied by an odd constant and rotated. Each step is a
    /// bijection of the state, so two traces that differ in a single word never hash alike.
    /// (It replaced FNV-1a, whose byte at a time was a dependent multiply per byte: 8 per
    /// caller request, about 100 per trace line.)
    #[inline]
    pub(crate) fn mix(&mut self, bytes: &[u8]) {
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut h = self.hash;
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
            h = (h ^ w).wrapping_mul(K).rotate_left(29);
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            let w = u64::from_le_bytes(last) ^ (rest.len() as u64) << 61;
            h = (h ^ w).wrapping_mul(K).rotate_left(29);
        }
        self.hash = h;
    }

    /// The last lines with their simulated timestamps.
    pub fn tail(&self) -> Vec<String> {
        self.ring
            .iter()
            .map(|(t, l)| format!("{:>12.3}s  {l}", t.as_duration().as_secs_f64()))
            .collect()
    }
}

pub(super) const RING: usize = 40;

/// The world's shared mutable state (one lock; the executor is single-threaded).
#[derive(Debug)]
pub struct State {
    pub(crate) provider: Provider,
    pub(crate) rng: SimRng,
    pub(crate) faults: Faults,
    pub(crate) healed: bool,
    pub(crate) inflight: Vec<u32>,
    /// Per process: token-endpoint calls in flight.
    pub(crate) proc_inflight: Vec<u32>,
    pub(crate) metrics: Metrics,
    pub(crate) trace: Trace,
    pub(crate) failure: Option<Failure>,
    pub(crate) last_committed: Vec<Option<String>>,
    pub(crate) crash_on_save: Vec<bool>,
    pub(crate) families: Vec<FamilyId>,
    /// Per process: the generation last served, its access token's true expiry and grant.
    pub(crate) gen_cache: Vec<(u64, MonoTime, FamilyId)>,
    pub(crate) skew_tolerance: Duration,
    pub(crate) pending_callers: u64,
    pub(crate) reauth_reports: BTreeMap<(usize, u32), Vec<String>>,
    pub(crate) instance: Vec<u32>,
    pub(crate) replays_checked: usize,
    pub(crate) allow_revoked: bool,
    pub(crate) reauth_never: bool,
    pub(crate) unsaved_since: Vec<Option<MonoTime>>,
    /// Per credential: the latest answers delivered to processes (and the login).
    pub(crate) delivered: Vec<VecDeque<Delivered>>,
    /// Per credential: [`delivered_span`] of `delivered` (kept in step with it), so that
    /// [`State::valid_token_at`] answers a caller's request in O(1) from one compact array.
    pub(crate) delivered_valid: Vec<(MonoTime, MonoTime)>,
    /// Per credential: when the latest refresh answer reached a process.
    pub(crate) last_delivered: Vec<Option<MonoTime>>,
    pub(crate) failure_tail: Option<Vec<String>>,
    pub(crate) lifetime_known: bool,
    /// Per credential: its store fails every operation before this time (an outage).
    pub(crate) outage_until: Vec<MonoTime>,
    /// Per credential: the newest grant its store ever held.
    pub(crate) store_family: Vec<Option<FamilyId>>,
    /// Per process: the grant of the last login it installed; it serves no older grant since.
    pub(crate) login_floor: Vec<Option<FamilyId>>,
    /// Per credential: the sets its store held before its latest writes, newest last (at most
    /// [`STALE_DEPTH`]; kept only when stale reads are on): what a stale read answers with.
    pub(crate) store_history: Vec<VecDeque<Stored>>,
    /// Refresh tokens whose rotation a lost save hid: the one it left in the store, and those
    /// between it and the lost set's. A process holding one cannot know it is spent.
    pub(crate) left_by_lost_save: HashSet<String>,
    /// Per credential: a lost save dropped a set of a newer grant (a login) from the store, so
    /// the store may hand the older grant to a process again.
    pub(crate) lost_grant: Vec<bool>,
    /// Per process instance: a store read of it was answered with an older set (a stale
    /// read). What it decides from then on may rest on that lie: a set it adopted from the
    /// stale read, a set refreshed from that one, and so on, with no way for it to tell.
    pub(crate) misled: Vec<bool>,
    /// Per process instance: refresh tokens whose rotation answer reached it. It knows they are
    /// spent; sending one again is its own replay, whatever the store says.
    pub(crate) seen_rotated: Vec<HashSet<String>>,
    /// Per process instance: the access tokens a resource server's 401 was reported to it
    /// for. A retry served one of them again was served a token it knew was rejected.
    pub(crate) reported_rejected: Vec<HashSet<String>>,
    /// Per process instance: the access tokens it served, as (grant, issue order), first
    /// serving first.
    pub(crate) served_sets: Vec<Vec<(FamilyId, u64)>>,
}

/// How many earlier sets of a store a stale read can answer with.
pub(crate) const STALE_DEPTH: usize = 3;

impl State {
    /// Records the set a write that landed in credential `cred`'s store replaced, for stale
    /// reads.
    pub(crate) fn remember_replaced(&mut self, cred: usize, prior: Option<Stored>) {
        if self.faults.stale_read <= 0.0 {
            return;
        }
        if let Some(p) = prior {
            let h = &mut self.store_history[cred];
            if h.len() == STALE_DEPTH {
                h.pop_front();
            }
            h.push_back(p);
        }
    }

    /// Whether process `proc`'s use of refresh token `rt` may rest on a lie of the store: it
    /// was answered a stale read, or a lost save left `rt` in the store after its rotation.
    pub(crate) fn store_misled(&self, proc: usize, rt: &str) -> bool {
        self.misled[proc] || self.left_by_lost_save.contains(rt)
    }

    /// The going-back oracle, run when process `proc` serves a new generation whose access
    /// token is of `family` at issue order `seq`: a process never serves again an access token
    /// it had served before a newer one of the same grant. The store's content only moves
    /// forward (the store oracle checks every write that lands, and a lost save writes
    /// nothing), so only a stale read can show a process an older set it cannot tell from
    /// another process's newer one: the oracle holds for processes never answered a stale
    /// read; the others are held to the refresh-token oracle (never send a refresh token whose
    /// rotation answer you received).
    pub(crate) fn check_not_back(
        &mut self,
        proc: usize,
        family: FamilyId,
        seq: u64,
        now: MonoTime,
    ) {
        let served = &self.served_sets[proc];
        let again = served.contains(&(family, seq));
        if !again {
            self.served_sets[proc].push((family, seq));
            return;
        }
        if !self.misled[proc] && served.iter().any(|&(f, q)| f == family && q > seq) {
            self.violate_correctness(
                now,
                format!("p{proc} went back to an access token it had served before a newer one of the same grant (an older set it had replaced)"),
            );
        }
    }

    /// Whether credential `cred`'s store is in an outage at `now`.
    pub(crate) fn store_out(&self, cred: usize, now: MonoTime) -> bool {
        now < self.outage_until[cred]
    }

    /// The store oracle, run on every write that landed in credential `cred`'s store: the
    /// written set must not be older, in the provider's issue order, than the set it replaced
    /// (a save must never write a set over a newer one), and never of an older grant than the
    /// store ever held (a login is never overwritten by the grant it replaced).
    pub(crate) fn check_store_write(
        &mut self,
        cred: usize,
        prior: Option<&TokenSet>,
        written: &TokenSet,
        writer: &str,
        now: MonoTime,
    ) {
        let order = |s: &State, t: &TokenSet| -> Option<IssueOrder> {
            s.provider.issue_order(
                t.access_token().expose_secret(),
                t.refresh_token().map(|r| r.expose_secret()),
            )
        };
        let Some(new) = order(self, written) else {
            return;
        };
        if let Some(newest) = self.store_family[cred]
            && new.family < newest
        {
            self.violate_correctness(
                    now,
                    format!(
                        "c{cred}: {writer} wrote a token set of grant {} over the store of the newer grant {newest} (a login was overwritten)",
                        new.family
                    ),
                );
            return;
        }
        self.store_family[cred] = Some(new.family.max(self.store_family[cred].unwrap_or(0)));
        let Some(old) = prior.and_then(|p| order(self, p)) else {
            return;
        };
        if old.family != new.family {
            return;
        }
        let older = match (new.refresh, old.refresh) {
            (Some(n), Some(o)) if n != o => n < o,
            (Some(_), None) | (None, Some(_)) => false,
            _ => new.access < old.access,
        };
        if older {
            self.violate_correctness(
                now,
                format!(
                    "c{cred}: {writer} wrote an older token set over a newer one of the same grant ({})",
                    if new.refresh != old.refresh { "older refresh token" } else { "older access token" }
                ),
            );
        }
    }

    pub(crate) fn trace_line(&mut self, at: MonoTime, line: String) {
        if line.contains(SECRET_MARKER) {
            // Report the leak without the secret itself.
            let shown: String = line
                .split(SECRET_MARKER)
                .next()
                .unwrap_or("")
                .chars()
                .take(80)
                .collect();
            self.violate_correctness(
                at,
                format!("a secret appeared in a log line: {shown}<secret…>"),
            );
            return;
        }
        self.trace.mix(&at.as_nanos().to_le_bytes());
        self.trace.mix(line.as_bytes());
        self.trace.lines += 1;
        if self.trace.print {
            println!("{:>12.3}s  {line}", at.as_duration().as_secs_f64());
        }
        if self.trace.ring.len() == RING {
            self.trace.ring.pop_front();
        }
        self.trace.ring.push_back((at, line));
        self.check_replays(at);
    }

    pub(crate) fn check_replays(&mut self, at: MonoTime) {
        while self.replays_checked < self.provider.replays.len() {
            let r = self.provider.replays[self.replays_checked].clone();
            self.replays_checked += 1;
            if !r.excused && !self.allow_revoked {
                self.violate_correctness(
                    at,
                    format!(
                        "a rotated refresh token of family {} was replayed outside the grace window{}",
                        r.family,
                        if r.revoked_family { " and the provider revoked the family" } else { "" }
                    ),
                );
            }
        }
    }

    pub(crate) fn violate_correctness(&mut self, at: MonoTime, message: String) {
        self.violate(FailureKind::Correctness, at, message);
    }

    pub(crate) fn violate(&mut self, kind: FailureKind, at: MonoTime, message: String) {
        if self.failure.is_none() {
            self.failure_tail = Some(self.trace.tail());
            self.failure = Some(Failure {
                kind,
                message,
                at_secs: at.as_duration().as_secs_f64(),
            });
        }
    }

    /// Records a refresh answer that reached process `proc` of credential `cred`.
    pub(crate) fn record_delivered(
        &mut self,
        cred: usize,
        proc: usize,
        at: MonoTime,
        access: String,
        refresh: Option<String>,
    ) {
        let record = self
            .provider
            .access_record(&access)
            .map(|r| (r.family, r.expires));
        let d = &mut self.delivered[cred];
        if d.len() == DELIVERED_KEPT {
            d.pop_front();
        }
        d.push_back(Delivered {
            at,
            proc,
            access,
            refresh,
            record,
        });
        self.delivered_valid[cred] = delivered_span(d);
        self.last_delivered[cred] = Some(at);
    }

    /// Whether an access token the credential had received by `t` is valid at `t`.
    pub(crate) fn valid_token_at(&self, cred: usize, t: MonoTime) -> bool {
        // While no access token anywhere was revoked, an issued token is valid exactly until
        // its recorded expiry; from the newest delivery on, every kept answer counts: the
        // loop below then answers `t` < the latest of their expiries.
        let (newest, until) = self.delivered_valid[cred];
        if t >= newest && !self.provider.access_revoked_anywhere() {
            return t < until;
        }
        // Newest first: usually the first one answers. While the provider never revoked an
        // access token of the family, `check_resource` reduces to the recorded expiry (an
        // issued token's expiry never changes once delivered), which saves a string-keyed
        // lookup per caller request.
        self.delivered[cred].iter().rev().any(|d| {
            d.at <= t
                && match d.record {
                    None => false,
                    Some((family, expires)) if !self.provider.family_access_revoked(family) => {
                        t < expires
                    }
                    Some(_) => self.provider.check_resource(&d.access, t) == ResourceAnswer::Ok,
                }
        })
    }

    pub(crate) fn series_add(&mut self, at: MonoTime, call: bool, wait: u64) {
        let b = (at.as_nanos() / self.metrics.bucket_ns.max(1)) as usize;
        if let Some(slot) = self.metrics.series.get_mut(b) {
            if call {
                slot.0 += 1;
            }
            slot.1 = slot.1.max(wait);
        }
    }
}

pub(super) fn final_checks(w: &Arc<Shared>, now: MonoTime) {
    let cfg = &w.cfg;
    let mut s = w.state.lock();
    if s.failure.is_some() {
        return;
    }
    // Token-endpoint budgets per credential.
    let mut per_cred = vec![0u64; cfg.credentials];
    let _ = &mut per_cred;
    if let Some(exact) = cfg.exact_calls_per_credential {
        let total = s.metrics.token_calls.len() as u64;
        if total != exact * cfg.credentials as u64 {
            s.violate_correctness(
                now,
                format!(
                    "expected exactly {exact} token-endpoint call(s) per credential, saw {total} for {} credential(s)",
                    cfg.credentials
                ),
            );
            return;
        }
    }
    if cfg.check_unauthorized_retries {
        if s.metrics.rs_unauthorized == 0 {
            s.violate_correctness(
                now,
                "the resource server never rejected a token: the world did not exercise the 401 path"
                    .into(),
            );
            return;
        }
        if s.metrics.rs_unauthorized_after_retry > 0 {
            let message = format!(
                "{} of {} retries after a 401 were served a token the resource server also rejected",
                s.metrics.rs_unauthorized_after_retry, s.metrics.rs_unauthorized
            );
            s.violate_correctness(now, message);
            return;
        }
    }
    if let Some(max) = cfg.max_calls_per_credential {
        let total = s.metrics.token_calls.len() as u64;
        if total > max * cfg.credentials as u64 {
            s.violate_correctness(
                now,
                format!(
                    "at most {max} token-endpoint call(s) per credential expected, saw {total} for {} credential(s): a refresh loop or extra refreshes",
                    cfg.credentials
                ),
            );
            return;
        }
    }
    match &cfg.reauth {
        ReauthExpect::ExactlyOnce(reason) => {
            if s.reauth_reports.is_empty() {
                s.violate_correctness(
                    now,
                    format!("re-authorization ({reason}) was never reported"),
                );
                return;
            }
            let bad = s
                .reauth_reports
                .iter()
                .find(|(_, v)| v.len() != 1 || &v[0] != reason)
                .map(|(k, v)| (*k, v.clone()));
            if let Some(((p, _), v)) = bad {
                s.violate_correctness(
                    now,
                    format!("process p{p} reported re-authorization {v:?}, expected {reason:?} exactly once"),
                );
                return;
            }
        }
        ReauthExpect::Never | ReauthExpect::Allowed => {}
    }
    if !s.allow_revoked {
        for c in 0..cfg.credentials {
            let f = s.families[c];
            let excused = s
                .provider
                .replays
                .iter()
                .any(|r| r.excused && r.family == f);
            if let Some(why) = s.provider.family_revoked(f).filter(|_| !excused) {
                s.violate_correctness(now, format!("credential c{c}'s family was revoked: {why}"));
                return;
            }
        }
    }
    if cfg.check_convergence && cfg.reauth == ReauthExpect::Never && !s.allow_revoked {
        for c in 0..cfg.credentials {
            let f = s.families[c];
            if s.provider.family_revoked(f).is_some() {
                continue;
            }
            let newest = s.provider.current_refresh_token(f).map(str::to_owned);
            let stored = w.stores[c].snapshot().and_then(|st| {
                st.tokens
                    .refresh_token()
                    .map(|r| r.expose_secret().to_owned())
            });
            if stored.is_none() && s.provider.rotations(f) == 0 {
                // Nothing was ever issued after the login's tokens, which the host holds: a
                // client that never writes the store has lost nothing (yet).
                continue;
            }
            if newest.is_some() && stored != newest {
                if stored
                    .as_ref()
                    .is_some_and(|r| s.left_by_lost_save.contains(r))
                {
                    // The newest set's save was acknowledged and lost: the store's failure.
                    continue;
                }
                if s.unsaved_since[c]
                    .is_some_and(|t| now.saturating_duration_since(t) < w.policy.store_timeout())
                {
                    // The world ends while the newest rotation's first save is on its way.
                    continue;
                }
                s.violate_correctness(
                    now,
                    format!("credential c{c}: the store does not hold the provider's newest refresh token at the end"),
                );
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Trace;

    fn hash(parts: &[&[u8]]) -> u64 {
        let mut t = Trace::new(false);
        for p in parts {
            t.mix(p);
        }
        t.hash
    }

    /// Any one changed byte, a moved line end or a trailing zero changes the trace hash.
    #[test]
    fn the_trace_hash_tells_apart_traces_that_differ_in_one_byte() {
        let line = b"p3 Refreshed { at: 86465012.855s, flight: FlightId(25), generation: 26 }";
        let base = hash(&[line]);
        assert_eq!(base, hash(&[line]));
        for i in 0..line.len() {
            for bit in 0..8 {
                let mut changed = line.to_vec();
                changed[i] ^= 1 << bit;
                assert_ne!(hash(&[&changed]), base, "byte {i} bit {bit}");
            }
        }
        assert_ne!(hash(&[b"a"]), hash(&[b"a\0"]));
        assert_ne!(hash(&[b""]), hash(&[b"\0"]));
        assert_ne!(hash(&[b"12345678", b"9"]), hash(&[b"12345678", b"8"]));
        assert_ne!(hash(&[b"x", b"y"]), hash(&[b"y", b"x"]));
    }
}
