#!/usr/bin/env python3
"""Produces JSON events as Avro in the Confluent wire format, with Confluent's own client.

A cross-check for pseudopipe's Avro decoding: the records are written by
confluent_kafka's AvroSerializer (magic byte 0, the 4-byte big-endian schema id the
registry gave, the Avro binary datum), not by pseudopipe's code, so a test that feeds
them to ingest proves it reads what the Confluent ecosystem writes.

Reads one JSON event per line on stdin (blank lines skipped), registers the schema under
the topic's value subject (TopicNameStrategy: TOPIC-value, or --subject), produces each
event keyed by its event_id, waits for every delivery report, and prints one line:
`produced N events as Avro, schema id I`. Nullable unions are plain values in the JSON
(`"tenant": "brand-a"`), an absent field takes its schema default; a field the schema
does not know is an error. Exits 1 with a message on stderr on any failure; the message
names the line and the field, never an event's value.

Needs the packages of scripts/requirements-test.txt: scripts/install-test-deps.sh puts
them into ${PSEUDOPIPE_PYTHON_VENV:-~/.cache/pseudopipe/venv}; run this with that
venv's python.

    echo '{"event_id": "e-1", ...}' | ~/.cache/pseudopipe/venv/bin/python \\
        scripts/produce-avro.py --brokers 127.0.0.1:9092 --topic redemptions.raw \\
        --registry http://127.0.0.1:8081/apis/ccompat/v7 --schema schemas/coupon_redemption.avsc
"""

import argparse
import json
import re
import struct
import sys

try:
    import fastavro
    from confluent_kafka import KafkaException, Producer
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.schema_registry.error import SchemaRegistryError
    from confluent_kafka.serialization import MessageField, SerializationContext
except ImportError as error:
    sys.exit(
        f"produce-avro: {error}: run it with the python of the test venv made by "
        "scripts/install-test-deps.sh "
        "(${PSEUDOPIPE_PYTHON_VENV:-~/.cache/pseudopipe/venv}/bin/python)"
    )

# How long the last flush waits for delivery reports before giving up.
FLUSH_TIMEOUT_SECONDS = 30


class Failure(Exception):
    """A failure to report on stderr, then exit 1."""


def parse_arguments():
    parser = argparse.ArgumentParser(
        description="Produce JSON events from stdin as Confluent-framed Avro."
    )
    parser.add_argument("--brokers", required=True, help="bootstrap.servers, host:port[,...]")
    parser.add_argument("--topic", required=True, help="the topic to produce to")
    parser.add_argument(
        "--registry",
        required=True,
        help="base URL of a Confluent-compatible schema registry "
        "(Apicurio: http://HOST:PORT/apis/ccompat/v7)",
    )
    parser.add_argument("--schema", required=True, help="the Avro schema (.avsc) of the events")
    parser.add_argument(
        "--subject",
        help="the registry subject (default: TOPIC-value, Confluent's TopicNameStrategy)",
    )
    parser.add_argument(
        "-X",
        dest="properties",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a librdkafka producer property (TLS settings...), repeatable",
    )
    return parser.parse_args()


def producer_config(arguments):
    config = {"bootstrap.servers": arguments.brokers, "enable.idempotence": True}
    for property in arguments.properties:
        key, separator, value = property.partition("=")
        if not separator or not key:
            raise Failure(f"-X {key!r}: expected KEY=VALUE")
        config[key] = value
    return config


def describe(error):
    """What went wrong with an event, without its values: fastavro's messages quote the
    value that did not fit, so only the field name and the kind of error are kept."""
    message = str(error)
    field = re.search(r"on field (\S+)", message)
    if field:
        return f"a value does not match the schema on field {field.group(1)}"
    for names_only in (
        r"Field \S+ is specified in the schema but missing from the record",
        r"record contains more fields than the schema specifies: .*",
        r"no value and no default for \S+",
    ):
        match = re.match(names_only, message)
        if match:
            return match.group(0)
    return f"it does not match the schema ({type(error).__name__})"


def produce(arguments):
    try:
        with open(arguments.schema, encoding="utf-8") as file:
            schema = file.read()
        fastavro.parse_schema(json.loads(schema))
    except Exception as error:  # unreadable, not JSON, not Avro: fastavro's errors vary
        raise Failure(
            f"cannot read the schema {arguments.schema}: {type(error).__name__}: {error}"
        ) from None

    subject = arguments.subject or f"{arguments.topic}-value"
    config = producer_config(arguments)
    try:
        registry = SchemaRegistryClient({"url": arguments.registry})
        serializer = AvroSerializer(
            registry,
            schema,
            conf={
                "auto.register.schemas": True,
                "subject.name.strategy": lambda _context, _record_name: subject,
                # Refuse a field the schema does not know rather than drop it silently;
                # absent fields still take their defaults.
                "validate.strict.allow.default": True,
            },
        )
        context = SerializationContext(arguments.topic, MessageField.VALUE)
        producer = Producer(config)
    except Exception as error:  # a bad URL, property or schema: their errors vary
        raise Failure(f"cannot set up the producer: {type(error).__name__}: {error}") from None

    failures = []

    def on_delivery(error, _message):
        if error is not None:
            failures.append(error)

    produced = 0
    schema_id = None
    for number, line in enumerate(sys.stdin, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line.rstrip("\r\n"))
        except ValueError as error:
            raise Failure(
                f"line {number}: not JSON ({error.msg} at column {error.colno})"
            ) from None
        if not isinstance(event, dict):
            raise Failure(f"line {number}: not a JSON object")
        try:
            value = serializer(event, context)
        except SchemaRegistryError as error:
            raise Failure(
                f"registering the schema under {subject} at {arguments.registry} failed: "
                f"HTTP {error.http_status_code}, error {error.error_code}: {error.error_message}"
            ) from None
        except (ValueError, TypeError, AttributeError) as error:
            raise Failure(f"line {number}: {describe(error)}") from None
        except Exception as error:  # the registry is unreachable: httpx's errors vary
            raise Failure(
                f"registering the schema under {subject} at {arguments.registry} failed: "
                f"{type(error).__name__}: {error}"
            ) from None
        # The Confluent framing: magic byte 0, then the schema id, big-endian.
        magic, schema_id = struct.unpack(">bI", value[:5])
        if magic != 0:
            raise Failure(f"line {number}: the serializer wrote magic byte {magic}, not 0")
        # The schema makes event_id a string: the serializer has refused anything else.
        record = {
            "key": event["event_id"].encode("utf-8"),
            "value": value,
            "on_delivery": on_delivery,
        }
        try:
            try:
                producer.produce(arguments.topic, **record)
            except BufferError:
                # The local queue is full: let deliveries drain, then try once more.
                producer.flush(FLUSH_TIMEOUT_SECONDS)
                producer.produce(arguments.topic, **record)
        except (BufferError, KafkaException) as error:
            raise Failure(f"line {number}: producing failed: {error}") from None
        producer.poll(0)
        produced += 1

    left = producer.flush(FLUSH_TIMEOUT_SECONDS)
    if left:
        raise Failure(
            f"{left} of {produced} events not acknowledged by {arguments.brokers} "
            f"within {FLUSH_TIMEOUT_SECONDS} s"
        )
    if failures:
        raise Failure(f"{len(failures)} of {produced} events not delivered, first: {failures[0]}")
    if schema_id is None:
        print("produced 0 events as Avro (no schema registered)")
    else:
        print(f"produced {produced} events as Avro, schema id {schema_id}")


def main():
    arguments = parse_arguments()
    try:
        produce(arguments)
    except Failure as failure:
        sys.exit(f"produce-avro: {failure}")


if __name__ == "__main__":
    main()
