//! Kafka's partition lists as the relay reads and writes them, and how they are logged.

use rdkafka::{Offset, TopicPartitionList};
use tracing::warn;

use crate::offsets::TopicPartition;

/// The partitions of a list that carry an offset.
pub(super) fn committed_offsets(tpl: &TopicPartitionList) -> Vec<(TopicPartition, i64)> {
    tpl.elements()
        .iter()
        .filter_map(|elem| match elem.offset() {
            Offset::Offset(offset) => {
                Some((TopicPartition::new(elem.topic(), elem.partition()), offset))
            }
            _ => None,
        })
        .collect()
}

/// The partitions of `topic` in a list.
pub(super) fn partitions_of_topic(tpl: &TopicPartitionList, topic: &str) -> Vec<i32> {
    tpl.elements_for_topic(topic)
        .iter()
        .map(|elem| elem.partition())
        .collect()
}

/// The partitions of a list.
pub(super) fn partitions_of(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|elem| TopicPartition::new(elem.topic(), elem.partition()))
        .collect()
}

/// A list of offsets to commit.
pub(super) fn offsets_list(offsets: &[(TopicPartition, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for (tp, offset) in offsets {
        // Watermarks are offsets of consumed records: never negative, so never refused.
        if let Err(error) =
            tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset))
        {
            warn!(topic = %tp.topic, partition = tp.partition, offset, %error, "Cannot commit this offset.");
        }
    }
    tpl
}

/// A list of partitions.
pub(super) fn partitions_list<'a>(
    partitions: impl IntoIterator<Item = &'a TopicPartition>,
) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for tp in partitions {
        tpl.add_partition(&tp.topic, tp.partition);
    }
    tpl
}

/// `raw[0], raw[1]`, for a log line.
pub(super) fn list(partitions: &[TopicPartition]) -> String {
    partitions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `raw[0]@12, raw[1]@40`, for a log line or the report.
pub(super) fn list_offsets(offsets: &[(TopicPartition, i64)]) -> String {
    offsets
        .iter()
        .map(|(tp, offset)| format!("{tp}@{offset}"))
        .collect::<Vec<_>>()
        .join(", ")
}
