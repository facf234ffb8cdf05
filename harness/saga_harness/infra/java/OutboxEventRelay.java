// Debezium's embedded engine with the Outbox Event Router, publishing to Kafka.
//
// The relay the bench compares ours with (sagactl bench relay --against debezium). It reads
// the outbox table's inserts from a logical replication slot (pgoutput), routes each row with
// io.debezium.transforms.outbox.EventRouter, and produces it with a Kafka producer configured
// like ours (acks=all, idempotent). Offsets are committed to the engine only after the broker
// acknowledged the whole batch, as Debezium Server's Kafka sink does: at least once.
//
// Usage: java -cp <classes>:<libs>/* OutboxEventRelay <config.properties>
// Properties starting with "producer." configure the Kafka producer (prefix removed); every
// other property goes to the engine and the connector.

import java.io.FileInputStream;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.connect.header.Header;
import org.apache.kafka.connect.source.SourceRecord;

import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.RecordChangeEvent;
import io.debezium.engine.format.ChangeEventFormat;
import io.debezium.embedded.Connect;

public final class OutboxEventRelay {

    private static final String PRODUCER_PREFIX = "producer.";

    /** Sends every record of a batch, waits for all acks, then commits the batch's offsets. */
    static final class KafkaSink
            implements DebeziumEngine.ChangeConsumer<RecordChangeEvent<SourceRecord>> {
        private final KafkaProducer<byte[], byte[]> producer;

        KafkaSink(KafkaProducer<byte[], byte[]> producer) {
            this.producer = producer;
        }

        @Override
        public void handleBatch(
                List<RecordChangeEvent<SourceRecord>> records,
                DebeziumEngine.RecordCommitter<RecordChangeEvent<SourceRecord>> committer)
                throws InterruptedException {
            List<Future<RecordMetadata>> sent = new ArrayList<>(records.size());
            for (RecordChangeEvent<SourceRecord> event : records) {
                SourceRecord record = event.record();
                // The router drops what is not an outbox insert (updates, deletes, heartbeats).
                if (record == null || record.value() == null || record.topic() == null) {
                    continue;
                }
                RecordHeaders headers = new RecordHeaders();
                for (Header header : record.headers()) {
                    if (header.value() != null) {
                        headers.add(header.key(), bytes(header.value()));
                    }
                }
                sent.add(producer.send(new ProducerRecord<>(
                        record.topic(), null, bytes(record.key()), bytes(record.value()), headers)));
            }
            for (Future<RecordMetadata> ack : sent) {
                try {
                    ack.get();
                } catch (ExecutionException e) {
                    // Nothing of this batch is committed: the engine stops, a restart resends.
                    throw new RuntimeException("Kafka refused a record", e.getCause());
                }
            }
            for (RecordChangeEvent<SourceRecord> event : records) {
                committer.markProcessed(event);
            }
            committer.markBatchFinished();
        }
    }

    private static byte[] bytes(Object value) {
        if (value == null) {
            return null;
        }
        if (value instanceof byte[]) {
            return (byte[]) value;
        }
        return value.toString().getBytes(StandardCharsets.UTF_8);
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: OutboxEventRelay <config.properties>");
            System.exit(2);
        }
        Properties all = new Properties();
        try (InputStream in = new FileInputStream(args[0])) {
            all.load(in);
        }
        Properties engine = new Properties();
        Properties producerConfig = new Properties();
        for (String name : all.stringPropertyNames()) {
            if (name.startsWith(PRODUCER_PREFIX)) {
                producerConfig.setProperty(name.substring(PRODUCER_PREFIX.length()), all.getProperty(name));
            } else {
                engine.setProperty(name, all.getProperty(name));
            }
        }
        KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(
                producerConfig, new ByteArraySerializer(), new ByteArraySerializer());
        CountDownLatch finished = new CountDownLatch(1);
        int[] exitCode = {0};
        DebeziumEngine<RecordChangeEvent<SourceRecord>> relay = DebeziumEngine
                .create(ChangeEventFormat.of(Connect.class))
                .using(engine)
                .notifying(new KafkaSink(producer))
                .using((success, message, error) -> {
                    if (!success) {
                        System.err.println("OutboxEventRelay: engine stopped: " + message);
                        if (error != null) {
                            error.printStackTrace();
                        }
                        exitCode[0] = 1;
                    }
                    finished.countDown();
                })
                .build();
        ExecutorService runner = Executors.newSingleThreadExecutor();
        // SIGTERM: stop the engine (it commits what was acknowledged), then the producer.
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                relay.close();
                finished.await(30, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            }
            producer.close();
        }));
        runner.execute(relay);
        finished.await();
        runner.shutdown();
        System.exit(exitCode[0]);
    }
}
