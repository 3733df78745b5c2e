//! [`Client`]: produce to, read back from and ask metadata of a cluster, with fresh
//! librdkafka clients built from one set of properties.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::metadata::Metadata;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::{NewRecord, Record};

/// What a [`Client`] helper could not do with its cluster. Tests unwrap it, or print it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A librdkafka client could not be created, or one of its requests failed.
    #[error("{what}: {source}")]
    Kafka {
        /// What the helper was doing, naming the topic, partition or group.
        what: String,
        /// What librdkafka said.
        #[source]
        source: KafkaError,
    },
    /// The cluster answered, but not what the helper waited for (a topic it does not
    /// know, fewer partitions than created, records not all delivered...).
    #[error("{0}")]
    Cluster(String),
}

/// Turns a librdkafka error into an [`Error`] saying what was being done.
fn kafka(what: impl Into<String>) -> impl FnOnce(KafkaError) -> Error {
    let what = what.into();
    move |source| Error::Kafka { what, source }
}

/// The librdkafka properties of one cluster (bootstrap servers, security) and what a
/// test does with them. Every call makes its own short-lived librdkafka client, so
/// nothing is shared between calls, just like separate processes.
///
/// Most tests use it through [`Broker`](crate::Broker); use it directly to try other
/// properties, e.g. to prove that a client without a certificate is refused:
///
/// ```no_run
/// # let broker = testkit::Broker::start_with_client_certificates("cloud");
/// let anonymous = broker.client().without("ssl.certificate.location").without("ssl.key.location");
/// assert!(anonymous.metadata(std::time::Duration::from_secs(3)).is_err());
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    properties: BTreeMap<String, String>,
}

impl Client {
    /// A client with these librdkafka properties (at least `bootstrap.servers`).
    pub fn new<K: Into<String>, V: Into<String>>(
        properties: impl IntoIterator<Item = (K, V)>,
    ) -> Client {
        Client {
            properties: properties
                .into_iter()
                .map(|(key, value)| (key.into(), value.into()))
                .collect(),
        }
    }

    /// The same client with one more property (or a changed one).
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Client {
        self.properties.insert(key.to_owned(), value.into());
        self
    }

    /// The same client without a property.
    pub fn without(mut self, key: &str) -> Client {
        self.properties.remove(key);
        self
    }

    /// The properties, to write into a pseudopipe config (librdkafka names).
    pub fn properties(&self) -> &BTreeMap<String, String> {
        &self.properties
    }

    /// A librdkafka config with these properties, for a test that builds its own client.
    pub fn config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    /// Asks the cluster for its metadata (all topics): `Ok` means it answers.
    pub fn metadata(&self, timeout: Duration) -> Result<Metadata, KafkaError> {
        self.metadata_consumer()?.fetch_metadata(None, timeout)
    }

    /// The number of partitions of `topic`, or `None` if the cluster does not know it.
    pub fn partition_count(
        &self,
        topic: &str,
        timeout: Duration,
    ) -> Result<Option<usize>, KafkaError> {
        let metadata = self
            .metadata_consumer()?
            .fetch_metadata(Some(topic), timeout)?;
        Ok(metadata
            .topics()
            .iter()
            .find(|found| found.name() == topic && found.error().is_none())
            .map(|found| found.partitions().len())
            .filter(|&count| count > 0))
    }

    /// Commits `offset` of `topic`/`partition` for the consumer group `group`, as a member
    /// that stopped there would have.
    pub fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> Result<(), Error> {
        let consumer: BaseConsumer = self
            .config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(kafka("cannot create a consumer"))?;
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(topic, partition, Offset::Offset(offset))
            .map_err(kafka(format!("cannot commit {topic}/{partition}@{offset}")))?;
        consumer
            .commit(&offsets, rdkafka::consumer::CommitMode::Sync)
            .map_err(kafka(format!("cannot commit {topic}/{partition}@{offset}")))
    }

    /// The offset the consumer group `group` has committed for each partition of `topic`
    /// (the next one it will read), in partition order; `None` where it has committed
    /// none. Reads the last committed offsets, whatever a transaction still open would
    /// commit (`read_uncommitted`: no waiting for it); joins nothing, disturbs no member.
    pub fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
        timeout: Duration,
    ) -> Result<Vec<Option<i64>>, Error> {
        let deadline = Instant::now() + timeout;
        let partitions = self.wait_for_partitions(topic, deadline)?;
        let consumer: BaseConsumer = self
            .config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_uncommitted")
            .create()
            .map_err(kafka("cannot create a consumer"))?;
        let mut asked = TopicPartitionList::new();
        for partition in 0..partitions {
            asked.add_partition(
                topic,
                i32::try_from(partition).expect("a topic has fewer than 2^31 partitions"),
            );
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let committed = consumer
            .committed_offsets(asked, left.max(Duration::from_secs(1)))
            .map_err(kafka(format!("offsets of group {group} for {topic}")))?;
        committed
            .elements_for_topic(topic)
            .iter()
            .map(|elem| match (elem.error(), elem.offset()) {
                (Err(source), _) => Err(Error::Kafka {
                    what: format!("offset of group {group} for {topic}/{}", elem.partition()),
                    source,
                }),
                (Ok(()), Offset::Offset(offset)) => Ok(Some(offset)),
                (Ok(()), _) => Ok(None),
            })
            .collect()
    }

    /// The low and high watermarks of every partition of `topic`, in partition order.
    pub fn watermarks(&self, topic: &str, timeout: Duration) -> Result<Vec<(i64, i64)>, Error> {
        let deadline = Instant::now() + timeout;
        let partitions = self.wait_for_partitions(topic, deadline)?;
        let consumer = self
            .metadata_consumer()
            .map_err(kafka("cannot create a consumer"))?;
        (0..partitions)
            .map(|partition| {
                let partition =
                    i32::try_from(partition).expect("a topic has fewer than 2^31 partitions");
                let left = deadline.saturating_duration_since(Instant::now());
                consumer
                    .fetch_watermarks(topic, partition, left.max(Duration::from_secs(1)))
                    .map_err(kafka(format!("watermarks of {topic}/{partition}")))
            })
            .collect()
    }

    /// Creates `topic` with `partitions` partitions (CreateTopics through the admin API,
    /// replication factor 1) and waits until metadata shows all of them.
    pub fn create_topic(
        &self,
        topic: &str,
        partitions: u32,
        timeout: Duration,
    ) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let admin: AdminClient<DefaultClientContext> = self
            .config()
            .create()
            .map_err(kafka("cannot create an admin client"))?;
        let wanted = i32::try_from(partitions)
            .map_err(|_| Error::Cluster(format!("{partitions} partitions is too many")))?;
        let options = AdminOptions::new().operation_timeout(Some(timeout));
        let results = futures::executor::block_on(admin.create_topics(
            &[NewTopic::new(topic, wanted, TopicReplication::Fixed(1))],
            &options,
        ))
        .map_err(kafka(format!("cannot create topic {topic}")))?;
        for result in results {
            result.map_err(|(_, code)| {
                Error::Cluster(format!("cannot create topic {topic}: {code}"))
            })?;
        }
        loop {
            let count = self.wait_for_partitions(topic, deadline)?;
            if count == partitions as usize {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Cluster(format!(
                    "topic {topic} has {count} partitions, not {partitions}"
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Produces `records` to `topic` and waits until every one is acknowledged.
    ///
    /// Returns how many were delivered, or the first delivery error.
    pub fn produce<R: Into<NewRecord>>(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = R>,
        timeout: Duration,
    ) -> Result<usize, Error> {
        let producer: BaseProducer<DeliveryTally> = self
            .config()
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", timeout.as_millis().to_string())
            .create_with_context(DeliveryTally::default())
            .map_err(kafka("cannot create a producer"))?;
        let mut sent = 0;
        for record in records {
            let record: NewRecord = record.into();
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for (key, value) in &record.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            let mut base = BaseRecord::to(topic)
                .payload(&record.payload)
                .headers(headers);
            if let Some(key) = &record.key {
                base = base.key(key);
            }
            if let Some(partition) = record.partition {
                base = base.partition(partition);
            }
            loop {
                match producer.send(base) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        base = back;
                        producer.poll(Duration::from_millis(50));
                    }
                    Err((error, _)) => return Err(kafka(format!("cannot send to {topic}"))(error)),
                }
            }
            sent += 1;
            producer.poll(Duration::ZERO);
        }
        let flushed = producer.flush(timeout);
        let tally = producer.context();
        let delivered = tally.delivered.load(Ordering::SeqCst);
        if let Some(error) = tally
            .first_error
            .lock()
            .expect("no panic while counting")
            .take()
        {
            return Err(Error::Cluster(format!(
                "{delivered} of {sent} records delivered to {topic}; first error: {error}"
            )));
        }
        flushed.map_err(kafka(format!(
            "{delivered} of {sent} records delivered to {topic} before {timeout:?}"
        )))?;
        Ok(delivered)
    }

    /// Reads `topic` from the beginning of every partition with a fresh consumer (a new
    /// group, nothing committed) until `expected_count` records have arrived or
    /// `timeout` has passed, then takes whatever else is already there, so duplicates
    /// show. Returns the records sorted by partition and offset.
    ///
    /// Reads with `isolation.level=read_committed`, as the analysts' consumers do: records
    /// of aborted transactions never show, those of open ones only once committed.
    pub fn read_all(
        &self,
        topic: &str,
        expected_count: usize,
        timeout: Duration,
    ) -> Result<Vec<Record>, Error> {
        let deadline = Instant::now() + timeout;
        let mut reader = self.reader(topic, timeout)?;
        while reader.records().len() < expected_count && Instant::now() < deadline {
            reader.read_for(
                deadline
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(500)),
            );
        }
        // Enough (or too late): a short last look for records already there beyond the count.
        reader.read_for(
            Duration::from_millis(300).min(deadline.saturating_duration_since(Instant::now())),
        );
        Ok(reader.into_records())
    }

    /// A [`TopicReader`] of `topic` from the beginning of every partition
    /// (`read_committed`, a fresh group, nothing committed), waiting up to `timeout` for
    /// the topic to exist. Unlike [`read_all`](Self::read_all), it keeps its consumer, so a
    /// test can read as it goes while it does other things.
    pub fn reader(&self, topic: &str, timeout: Duration) -> Result<TopicReader, Error> {
        let partitions = self.wait_for_partitions(topic, Instant::now() + timeout)?;
        let consumer: BaseConsumer = self
            .config()
            // librdkafka wants a group even for assigned partitions; nothing is committed.
            .set(
                "group.id",
                format!("testkit-reader-{}", crate::random_suffix()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("allow.auto.create.topics", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "100")
            // librdkafka resets a position it cannot validate (a broker restarted, its
            // leader epoch moved on) with this policy: reading again skips nothing, and
            // `read_for` keeps each offset once.
            .set("auto.offset.reset", "earliest")
            .create()
            .map_err(kafka("cannot create a consumer"))?;
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            let partition =
                i32::try_from(partition).expect("a topic has fewer than 2^31 partitions");
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .map_err(kafka(format!("cannot assign {topic}/{partition}")))?;
        }
        consumer
            .assign(&assignment)
            .map_err(kafka(format!("cannot assign {topic}")))?;
        Ok(TopicReader {
            consumer,
            records: Vec::new(),
            next: HashMap::new(),
        })
    }

    /// Deletes the records of `topic`/`partition` before `offset` (DeleteRecords through
    /// the admin API, what retention does to old segments) and returns the partition's
    /// new low watermark.
    pub fn delete_records_before(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        timeout: Duration,
    ) -> Result<i64, Error> {
        let what = format!("cannot delete {topic}/{partition} before {offset}");
        let admin: AdminClient<DefaultClientContext> =
            self.config().create().map_err(kafka(&what))?;
        let mut offsets = TopicPartitionList::new();
        offsets
            .add_partition_offset(topic, partition, Offset::Offset(offset))
            .map_err(kafka(&what))?;
        let options = AdminOptions::new().operation_timeout(Some(timeout));
        let result = futures::executor::block_on(admin.delete_records(&offsets, &options))
            .map_err(kafka(&what))?;
        let element = result.find_partition(topic, partition).ok_or_else(|| {
            Error::Cluster(format!(
                "{what}: the broker did not answer for the partition"
            ))
        })?;
        element.error().map_err(kafka(&what))?;
        match element.offset() {
            Offset::Offset(low) => Ok(low),
            other => Err(Error::Cluster(format!(
                "{what}: new low watermark {other:?}"
            ))),
        }
    }

    /// Waits until the cluster reports `topic` with at least one partition.
    pub(crate) fn wait_for_partitions(
        &self,
        topic: &str,
        deadline: Instant,
    ) -> Result<usize, Error> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let problem = match self.partition_count(topic, left.min(Duration::from_secs(5))) {
                Ok(Some(count)) => return Ok(count),
                Ok(None) => Error::Cluster(format!("the cluster does not know topic {topic}")),
                Err(error) => kafka("metadata request failed")(error),
            };
            if Instant::now() >= deadline {
                return Err(problem);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A consumer that never creates topics by asking about them.
    fn metadata_consumer(&self) -> Result<BaseConsumer, KafkaError> {
        self.config()
            .set("allow.auto.create.topics", "false")
            .create()
    }
}

/// A consumer that reads every partition of one topic from the beginning, with
/// `read_committed`, and keeps what it read: a test calls [`read_for`](Self::read_for)
/// between the other things it does (restarting a stage, cutting a link), then takes
/// [`into_records`](Self::into_records). Made by [`Client::reader`].
pub struct TopicReader {
    consumer: BaseConsumer,
    records: Vec<Record>,
    /// The offset after the last record kept, by partition: what a reset reads again is
    /// not kept twice.
    next: HashMap<i32, i64>,
}

impl std::fmt::Debug for TopicReader {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TopicReader")
            .field("records", &self.records.len())
            .finish_non_exhaustive()
    }
}

impl TopicReader {
    /// Reads for `duration`, keeping every record that arrives (each offset once); returns
    /// how many were kept.
    /// Transient fetch errors (a broker restarting) are retried by librdkafka.
    pub fn read_for(&mut self, duration: Duration) -> usize {
        let deadline = Instant::now() + duration;
        let before = self.records.len();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if let Some(Ok(message)) = self.consumer.poll(left) {
                let next = self.next.entry(message.partition()).or_default();
                if message.offset() >= *next {
                    *next = message.offset() + 1;
                    self.records.push(to_record(&message));
                }
            }
        }
        self.records.len() - before
    }

    /// The records read so far, in the order they arrived (by partition, in offset order).
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// The records read, sorted by partition and offset.
    pub fn into_records(mut self) -> Vec<Record> {
        self.records
            .sort_by_key(|record| (record.partition, record.offset));
        self.records
    }
}

fn to_record(message: &BorrowedMessage<'_>) -> Record {
    Record {
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec),
        headers: message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|header| (header.key.to_owned(), header.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default(),
        partition: message.partition(),
        offset: message.offset(),
    }
}

/// Counts delivery reports and keeps the first error.
#[derive(Default)]
struct DeliveryTally {
    delivered: AtomicUsize,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for DeliveryTally {}

impl ProducerContext for DeliveryTally {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::SeqCst);
            }
            Err((error, _)) => {
                self.first_error
                    .lock()
                    .expect("no panic while counting")
                    .get_or_insert_with(|| error.to_string());
            }
        }
    }
}
