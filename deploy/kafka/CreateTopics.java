/*
 * Creates the local stack's topics in one JVM run, so deploy/stack.sh needs
 * no Kafka shell scripts and pays the JVM start-up once.
 *
 *   java -cp 'libs/*' CreateTopics.java BOOTSTRAP PARTITIONS TOPIC...
 *   java -cp 'libs/*' CreateTopics.java BOOTSTRAP --list
 *
 * It waits for the broker (up to PL_STACK_TIMEOUT seconds, default 90) and
 * retries retriable errors, so the script can call it while the broker is
 * still starting. A topic that already exists counts as success. Exit status
 * is 0 on success, 1 on a timeout or a non-retriable error, 2 on bad usage.
 */

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.CreateTopicsResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.errors.RetriableException;
import org.apache.kafka.common.errors.TopicExistsException;

public class CreateTopics {
    private static final long POLL_MS = 250;

    public static void main(String[] args) throws InterruptedException {
        if (args.length < 2) {
            System.err.println("usage: CreateTopics BOOTSTRAP PARTITIONS TOPIC...");
            System.err.println("       CreateTopics BOOTSTRAP --list");
            System.exit(2);
        }
        String bootstrap = args[0];
        boolean list = args[1].equals("--list");
        int partitions = 0;
        if (!list) {
            try {
                partitions = Integer.parseInt(args[1]);
            } catch (NumberFormatException e) {
                partitions = 0;
            }
            if (partitions < 1) {
                System.err.println("CreateTopics: PARTITIONS must be a positive integer, got '"
                        + args[1] + "'");
                System.exit(2);
            }
        }
        long deadline = System.nanoTime()
                + TimeUnit.SECONDS.toNanos(timeoutSeconds());

        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.CLIENT_ID_CONFIG, "pl-stack-create-topics");
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "10000");
        props.put(AdminClientConfig.RECONNECT_BACKOFF_MS_CONFIG, "100");
        props.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500");
        props.put(AdminClientConfig.RETRY_BACKOFF_MS_CONFIG, "100");

        int rc;
        try (Admin admin = Admin.create(props)) {
            waitForBroker(admin, bootstrap, deadline);
            rc = list ? listTopics(admin)
                      : createTopics(admin, partitions,
                                     List.of(args).subList(2, args.length), deadline);
        } catch (TimeoutException e) {
            System.err.println("CreateTopics: " + e.getMessage());
            rc = 1;
        } catch (ExecutionException e) {
            System.err.println("CreateTopics: " + e.getCause());
            rc = 1;
        }
        System.exit(rc);
    }

    private static long timeoutSeconds() {
        String s = System.getenv("PL_STACK_TIMEOUT");
        if (s == null || s.isEmpty()) {
            return 90;
        }
        try {
            return Math.max(1, Long.parseLong(s));
        } catch (NumberFormatException e) {
            return 90;
        }
    }

    private static long remainingMs(long deadline) {
        return TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
    }

    /* Waits until the broker answers a metadata request with a live node. */
    private static void waitForBroker(Admin admin, String bootstrap, long deadline)
            throws InterruptedException, TimeoutException {
        Throwable last = null;
        while (remainingMs(deadline) > 0) {
            try {
                if (!admin.describeCluster().nodes()
                        .get(Math.min(5000, Math.max(1, remainingMs(deadline))),
                             TimeUnit.MILLISECONDS).isEmpty()) {
                    return;
                }
            } catch (ExecutionException | TimeoutException e) {
                last = e instanceof ExecutionException ? e.getCause() : e;
            }
            Thread.sleep(POLL_MS);
        }
        throw new TimeoutException("broker " + bootstrap + " did not answer in time"
                + (last == null ? "" : ": " + last));
    }

    private static int listTopics(Admin admin) throws InterruptedException, ExecutionException {
        for (String name : new TreeSet<>(admin.listTopics().names().get())) {
            System.out.println(name);
        }
        return 0;
    }

    /* Creates the topics; retries those that failed with a retriable error. */
    private static int createTopics(Admin admin, int partitions, List<String> topics,
                                    long deadline)
            throws InterruptedException, TimeoutException {
        List<String> todo = new ArrayList<>(topics);
        Throwable last = null;
        while (!todo.isEmpty()) {
            if (remainingMs(deadline) <= 0) {
                throw new TimeoutException("could not create " + todo
                        + (last == null ? "" : ": " + last));
            }
            List<NewTopic> wanted = new ArrayList<>();
            for (String t : todo) {
                wanted.add(new NewTopic(t, partitions, (short) 1));
            }
            CreateTopicsResult result = admin.createTopics(wanted);
            List<String> retry = new ArrayList<>();
            for (Map.Entry<String, KafkaFuture<Void>> e : result.values().entrySet()) {
                try {
                    e.getValue().get();
                    System.out.println("created " + e.getKey() + " (" + partitions
                            + " partitions)");
                } catch (ExecutionException ex) {
                    Throwable cause = ex.getCause();
                    if (cause instanceof TopicExistsException) {
                        System.out.println("exists  " + e.getKey());
                    } else if (cause instanceof RetriableException) {
                        last = cause;
                        retry.add(e.getKey());
                    } else {
                        System.err.println("CreateTopics: " + e.getKey() + ": " + cause);
                        return 1;
                    }
                }
            }
            todo = retry;
            if (!todo.isEmpty()) {
                Thread.sleep(POLL_MS);
            }
        }
        return 0;
    }
}
