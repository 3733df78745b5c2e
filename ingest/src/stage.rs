//! The ingest stage: decide per record with the engine of its [`LiveKeys`], then let the
//! shared relay do the Kafka work (in-flight window, watermarks, commits, quarantine
//! headers). Between two batches the keys follow the keyring ([`crate::keys`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use plumbing::{
    config, Decision, Finding, Layout, Origin, Processor, ProcessorError, RelayReport,
    RelaySettings, Shutdown, StageMetrics,
};
use pseudonymize::{BridgePairs, QuasiValues, Reason, Rejection};
use tracing::warn;

use formats::IngestFormat;

use crate::audit_topic::AuditMirror;
use crate::bridge::Bridge;
use crate::config::Settings;
use crate::coverage::Coverage;
use crate::keys::{Counts, LiveKeys};
use crate::risk::RiskWatch;
use crate::risk_replay::{rebuild_budget, RawHistory};

/// What ingest pseudonymizes with, and the side topics it writes about its keys.
#[derive(Debug)]
pub struct IngestKeys {
    /// The keys, following the keyring.
    pub live: LiveKeys,
    /// Where pairs of old and new tokens go during a rotation overlap, if anywhere.
    pub bridge: Option<Bridge>,
    /// Where the audit log is mirrored, if anywhere.
    pub mirror: Option<AuditMirror>,
    /// Classes below k watched, and k enforced, when the policy has `[risk]`.
    pub risk: Option<RiskWatch>,
}

/// What the processor changes as it goes (one relay thread uses it).
#[derive(Debug)]
struct State {
    keys: IngestKeys,
    /// Per input partition, the offset after the last record processed.
    next: BTreeMap<i32, i64>,
    counts: Counts,
    pairs: BridgePairs,
    /// The policy rules the first events did not match.
    coverage: Coverage,
    quasi: QuasiValues,
}

/// Pseudonymizes one record; a rejection becomes a quarantine decision, an event whose
/// subject withheld consent is dropped.
#[derive(Debug)]
pub struct IngestProcessor {
    state: Mutex<State>,
    /// What the records are made of, in and out.
    format: IngestFormat,
}

impl IngestProcessor {
    /// A processor applying `keys` to records of `format`.
    pub fn new(keys: IngestKeys, format: IngestFormat) -> Self {
        let coverage = Coverage::new(keys.live.engine().policy());
        Self {
            state: Mutex::new(State {
                coverage,
                keys,
                next: BTreeMap::new(),
                counts: Counts::default(),
                pairs: BridgePairs::default(),
                quasi: QuasiValues::new(),
            }),
            format,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Mirrors the audit log, logging (not failing) when the topic does not answer: the
    /// file stays the record, and the next look tries again.
    fn mirror(state: &mut State) {
        if let Some(mirror) = &mut state.keys.mirror {
            if let Err(error) = mirror.sync() {
                warn!(%error, "The audit log could not be mirrored to its topic; ingest tries again at its next keyring check.");
            }
        }
    }
}

/// The quarantine of a rejected event: its reason, message and detector finding.
fn quarantine(rejection: Rejection) -> Decision {
    Decision::Quarantine {
        reason: plumbing::Reason::new(rejection.reason.code()),
        message: rejection.message,
        finding: rejection.finding.map(|finding| Finding {
            field: finding.field,
            detector: finding.detector,
        }),
    }
}

impl Processor for IngestProcessor {
    fn process(&self, key: Option<&[u8]>, payload: Option<&[u8]>) -> Decision {
        self.process_at(
            Origin {
                partition: -1,
                offset: -1,
            },
            key,
            payload,
        )
    }

    fn process_at(&self, origin: Origin, _key: Option<&[u8]>, payload: Option<&[u8]>) -> Decision {
        // The input key is ignored on purpose: retail systems key by card or email.
        let mut state = self.lock();
        let State {
            keys,
            next,
            counts,
            pairs,
            coverage,
            quasi,
        } = &mut *state;
        if origin.partition >= 0 {
            next.insert(origin.partition, origin.offset + 1);
        }
        if let Some(watch) = &mut keys.risk {
            // The windows this record's decision rests on, read back if this instance
            // lacks them: classified as below, nothing emitted or counted but the risk's.
            let engine = keys.live.engine();
            let format = &self.format;
            watch.catch_up(origin, &mut |payload, out, quasi| {
                let outcome = format.pseudonymize(engine, payload, out, None, Some(quasi));
                outcome
                    .ok()
                    .map(|outcome| (outcome.tenant, outcome.record_key))
            });
        }
        let Some(payload) = payload else {
            return Decision::quarantine(
                plumbing::Reason::new(Reason::MalformedJson.code()),
                "the record has no payload",
            );
        };
        // A format whose records name a schema has its rules checked per schema instead.
        if !self.format.has_schemas() {
            coverage.observe(payload);
        }
        let mut out = Vec::with_capacity(payload.len() + payload.len() / 2);
        let engine = keys.live.engine();
        let bridged = keys.bridge.as_ref().map(|_| &mut *pairs);
        let observed = keys.risk.as_ref().map(|_| &mut *quasi);
        match self
            .format
            .pseudonymize(engine, payload, &mut out, bridged, observed)
        {
            Ok(outcome) => {
                let key = outcome.record_key(&out).map(<[u8]>::to_vec);
                if let Some(watch) = &mut keys.risk {
                    watch.observe(
                        origin,
                        outcome.tenant,
                        outcome.record_key.clone(),
                        quasi,
                        &mut out,
                    );
                }
                let payload = out;
                counts.add(outcome.tenant, outcome.key_version);
                if let Some(bridge) = &mut keys.bridge {
                    if !pairs.is_empty() {
                        bridge.send(outcome.tenant, pairs);
                    }
                }
                Decision::Forward { key, payload }
            }
            Err(rejection) if rejection.reason.is_drop() => Decision::Drop {
                reason: plumbing::Reason::new(rejection.reason.code()),
            },
            Err(rejection) => quarantine(rejection),
        }
    }

    fn between_batches(&self) -> Result<(), ProcessorError> {
        self.format.failure()?;
        let mut state = self.lock();
        let State {
            keys, next, counts, ..
        } = &mut *state;
        if keys
            .live
            .refresh(next, counts)
            .map_err(|error| error.to_string())?
        {
            if let Some(bridge) = &keys.bridge {
                bridge.flush();
            }
            Self::mirror(&mut state);
        }
        Ok(())
    }

    fn stopped(&self) {
        let mut state = self.lock();
        state.coverage.report();
        let State { keys, counts, .. } = &mut *state;
        if let Err(error) = keys.live.stopped(counts) {
            warn!(%error, "The end of this ingest run could not be recorded in the audit log.");
        }
        if let Some(bridge) = &keys.bridge {
            bridge.flush();
        }
        Self::mirror(&mut state);
    }
}

/// Runs ingest until `shutdown`; returns what it did.
///
/// At least once by default; with [`Settings::exactly_once`], the pseudonymized and
/// quarantined records of a batch and the input offsets past it commit in one Kafka
/// transaction on the on-prem cluster.
pub async fn run(
    settings: Settings,
    mut keys: IngestKeys,
    metrics: StageMetrics,
    shutdown: Shutdown,
) -> Result<RelayReport, plumbing::Error> {
    keys.live
        .started()
        .map_err(|error| plumbing::Error::Processor(error.into()))?;
    let producer = config::producer(&settings.brokers, &settings.kafka)?;
    let consumer = config::consumer(&settings.brokers, &settings.group_id, &settings.kafka)?;
    let mut relay = RelaySettings::new(
        "ingest",
        &settings.input_topic,
        &settings.output_topic,
        &settings.quarantine_topic,
    );
    relay.max_in_flight = settings.max_in_flight;
    relay.stall_timeout = settings.stall_timeout();
    let format = IngestFormat::new(
        settings.format,
        settings.registry().as_ref(),
        keys.live.engine().policy(),
        &settings.output_topic,
    )
    .map_err(|error| plumbing::Error::InvalidSettings(error.to_string()))?;
    if format.has_schemas() && keys.risk.as_ref().is_some_and(RiskWatch::enforces) {
        return Err(plumbing::Error::InvalidSettings(
            "the policy's `[risk]` sets `enforce_k`, which applies to JSON input only: set `enforce_k = false` for a topic in Avro (the monitor still counts its classes)".into(),
        ));
    }
    if let Some(watch) = keys.risk.as_mut().filter(|watch| watch.enforces()) {
        let history = RawHistory::new(&settings)?;
        watch.read_back_from(Box::new(history), rebuild_budget(&settings));
    }
    let processor = Arc::new(IngestProcessor::new(keys, format));
    IngestProcessor::mirror(&mut processor.lock());
    match settings.exactly_once() {
        None => {
            // One producer serves both topics: they live on the same cluster.
            let delivery = plumbing::DeliveryMode::AtLeastOnce {
                output: producer.clone(),
                quarantine: producer,
            };
            plumbing::run(relay, consumer, delivery, processor, metrics, shutdown).await
        }
        Some(exactly_once) => {
            let layout = Layout::SameCluster {
                producer,
                transactional_id: exactly_once.transactional_id,
            };
            let delivery = plumbing::DeliveryMode::ExactlyOnce {
                transactions: exactly_once.transactions,
                layout,
            };
            plumbing::run(relay, consumer, delivery, processor, metrics, shutdown).await
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::keys::{Clock, KeySettings};
    use plumbing::prometheus::Registry;
    use pseudonymize::{Kek, Keyring, Policy};

    const EVENT: &[u8] = include_bytes!("../../schemas/coupon_redemption.json");

    /// The system's clocks, moved forward by hand.
    #[derive(Clone, Default)]
    struct Later(Arc<Mutex<Duration>>);

    impl Later {
        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }

        fn ahead(&self) -> Duration {
            *self.0.lock().unwrap()
        }
    }

    impl Clock for Later {
        fn now_utc(&self) -> time::OffsetDateTime {
            time::OffsetDateTime::now_utc() + self.ahead()
        }

        fn now(&self) -> std::time::Instant {
            std::time::Instant::now() + self.ahead()
        }
    }

    /// A keyring with tenant `brand-a` in a temporary directory, and its KEK.
    struct Site {
        dir: tempfile::TempDir,
        kek: Kek,
    }

    impl Site {
        fn new() -> Self {
            let site = Self {
                dir: tempfile::tempdir().unwrap(),
                kek: Kek::generate(),
            };
            site.change(|keyring, log| {
                keyring.init(log, "test", "brand-a").unwrap();
            });
            site
        }

        fn keyring(&self) -> std::path::PathBuf {
            self.dir.path().join("keyring.json")
        }

        fn audit_log(&self) -> std::path::PathBuf {
            self.dir.path().join("keyring.json.audit.jsonl")
        }

        /// What `pseudopipe keys ...` would do.
        fn change(&self, operation: impl FnOnce(&mut Keyring, &mut pseudonymize::audit::AuditLog)) {
            let mut keyring = Keyring::open_or_new(&self.keyring(), &self.kek).unwrap();
            let mut log = keyring.audit_log(&self.audit_log()).unwrap();
            operation(&mut keyring, &mut log);
        }

        fn processor(&self) -> IngestProcessor {
            self.processor_with(None, None, Later::default())
        }

        fn processor_with(
            &self,
            rotate_every: Option<Duration>,
            bridge_overlap: Option<Duration>,
            clock: Later,
        ) -> IngestProcessor {
            let policy =
                Policy::from_toml(include_str!("../../schemas/coupon_redemption.policy.toml"))
                    .unwrap();
            let settings = KeySettings {
                keyring: self.keyring(),
                audit_log: self.audit_log(),
                check_every: Duration::ZERO,
                rotate_every,
                bridge_overlap,
                instance: "ingest-test".into(),
                input_topic: "raw".into(),
            };
            let kek = Kek::from_bytes(*self.kek.expose());
            let live =
                LiveKeys::open_with_clock(settings, kek, policy, &Registry::new(), clock).unwrap();
            IngestProcessor::new(
                IngestKeys {
                    live,
                    bridge: None,
                    mirror: None,
                    risk: None,
                },
                IngestFormat::Json,
            )
        }

        fn actions(&self) -> Vec<serde_json::Value> {
            std::fs::read_to_string(self.audit_log())
                .unwrap()
                .lines()
                .map(|line| serde_json::from_str(line).unwrap())
                .collect()
        }
    }

    fn at(partition: i32, offset: i64) -> Origin {
        Origin { partition, offset }
    }

    /// The key version of the forwarded event's card token.
    fn version_of(decision: &Decision) -> u32 {
        match decision {
            Decision::Forward { key, .. } => {
                let key = std::str::from_utf8(key.as_ref().unwrap()).unwrap();
                key[1..key.find('.').unwrap()].parse().unwrap()
            }
            other => panic!("expected a forward, got {other:?}"),
        }
    }

    #[test]
    fn a_valid_event_is_forwarded_keyed_by_its_card_token_not_its_input_key() {
        let site = Site::new();
        match site
            .processor()
            .process_at(at(0, 0), Some(b"6280 0012 3456 7890"), Some(EVENT))
        {
            Decision::Forward { key, payload } => {
                let key = String::from_utf8(key.unwrap()).unwrap();
                assert!(pseudonymize::is_token(&key));
                let out: serde_json::Value = serde_json::from_slice(&payload).unwrap();
                assert_eq!(out["customer"]["loyalty_card"], key.as_str());
            }
            other => panic!("expected a forward, got {other:?}"),
        }
    }

    #[test]
    fn bad_records_are_quarantined_with_their_reason() {
        let processor = Site::new().processor();
        for (payload, reason) in [
            (None, "malformed_json"),
            (Some(&b"{\"x\":1}"[..]), "missing_field"),
            (Some(&b"[]"[..]), "not_an_object"),
        ] {
            match processor.process_at(at(0, 0), None, payload) {
                Decision::Quarantine { reason: got, .. } => assert_eq!(got, reason),
                other => panic!("expected quarantine, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_rotation_applies_between_batches_and_is_recorded_with_the_first_offsets() {
        let site = Site::new();
        let processor = site.processor();
        processor.between_batches().unwrap();
        assert_eq!(
            version_of(&processor.process_at(at(0, 10), None, Some(EVENT))),
            1
        );
        assert_eq!(
            version_of(&processor.process_at(at(1, 4), None, Some(EVENT))),
            1
        );
        site.change(|keyring, log| {
            keyring.rotate(log, "officer", "brand-a").unwrap();
        });
        // Until the batch ends, the batch's version.
        assert_eq!(
            version_of(&processor.process_at(at(0, 11), None, Some(EVENT))),
            1
        );
        processor.between_batches().unwrap();
        assert_eq!(
            version_of(&processor.process_at(at(0, 12), None, Some(EVENT))),
            2
        );

        let entries = site.actions();
        let switch = entries
            .iter()
            .find(|entry| entry["action"] == "key_switch")
            .expect("a key_switch entry");
        assert_eq!(switch["key_version"], 2);
        assert_eq!(switch["tenant"], "brand-a");
        let details = switch["details"].as_str().unwrap();
        assert!(
            details.contains("offsets=0:12,1:5")
                && details.contains("previous=1 events_previous=3"),
            "{details}"
        );
        assert!(entries.iter().any(|entry| entry["action"] == "rotate"));
    }

    #[test]
    fn retiring_the_active_version_suspends_the_tenant_until_a_version_is_active() {
        let site = Site::new();
        let processor = site.processor();
        site.change(|keyring, log| {
            keyring.retire(log, "officer", "brand-a", 1).unwrap();
        });
        processor.between_batches().unwrap();
        match processor.process_at(at(0, 0), None, Some(EVENT)) {
            Decision::Quarantine { reason, .. } => assert_eq!(reason, "tenant_suspended"),
            other => panic!("expected quarantine, got {other:?}"),
        }
        site.change(|keyring, log| {
            keyring.destroy(log, "officer", "brand-a", 1).unwrap();
            keyring.rotate(log, "officer", "brand-a").unwrap();
        });
        processor.between_batches().unwrap();
        assert_eq!(
            version_of(&processor.process_at(at(0, 1), None, Some(EVENT))),
            2
        );
        let actions: Vec<_> = site
            .actions()
            .iter()
            .map(|entry| entry["action"].as_str().unwrap().to_owned())
            .collect();
        assert!(
            actions.contains(&"tenant_suspended".to_owned()),
            "{actions:?}"
        );
        assert_eq!(
            actions.iter().filter(|a| *a == "key_switch").count(),
            1,
            "{actions:?}"
        );
    }

    #[test]
    fn a_version_older_than_rotate_every_is_rotated_by_ingest_itself() {
        let site = Site::new();
        let day = Duration::from_secs(86_400);
        let clock = Later::default();
        let processor = site.processor_with(Some(day), None, clock.clone());
        processor.between_batches().unwrap();
        assert_eq!(
            version_of(&processor.process_at(at(0, 0), None, Some(EVENT))),
            1,
            "not rotated before it is due"
        );
        clock.advance(day);
        processor.between_batches().unwrap();
        assert_eq!(
            version_of(&processor.process_at(at(0, 1), None, Some(EVENT))),
            2,
            "rotated once the version is a day old"
        );
        let rotation = site
            .actions()
            .into_iter()
            .find(|entry| entry["action"] == "rotate")
            .expect("the scheduled rotation is an audit entry");
        assert_eq!(rotation["actor"], "ingest-test (rotate_every=86400s)");
    }

    #[test]
    fn each_rotation_opens_an_overlap_and_the_next_one_ends_it() {
        let site = Site::new();
        let processor =
            site.processor_with(None, Some(Duration::from_secs(3600)), Later::default());
        for _ in 0..2 {
            site.change(|keyring, log| {
                keyring.rotate(log, "officer", "brand-a").unwrap();
            });
            processor.between_batches().unwrap();
        }
        let bridges: Vec<(String, String)> = site
            .actions()
            .into_iter()
            .filter(|entry| {
                entry["action"]
                    .as_str()
                    .is_some_and(|action| action.starts_with("bridge_"))
            })
            .map(|entry| {
                let details = entry["details"].as_str().unwrap();
                let from = details.split(' ').find(|d| d.starts_with("from=")).unwrap();
                (
                    entry["action"].as_str().unwrap().to_owned(),
                    from.to_owned(),
                )
            })
            .collect();
        let expected = [
            ("bridge_start", "from=1"),
            ("bridge_end", "from=1"),
            ("bridge_start", "from=2"),
        ];
        assert_eq!(bridges, expected.map(|(a, f)| (a.to_owned(), f.to_owned())),);
    }

    #[test]
    fn a_keyring_that_no_longer_opens_stops_the_stage() {
        let site = Site::new();
        let processor = site.processor();
        std::fs::write(site.keyring(), b"{}").unwrap();
        let error = processor.between_batches().unwrap_err();
        assert!(error.to_string().contains("keyring"), "{error}");
    }
}
