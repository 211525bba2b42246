/*
 * Creates the local stack's topics in one JVM run, so deploy/stack.sh (and
 * its cluster mode, deploy/kafka-cluster.sh) needs no Kafka shell scripts and
 * pays the JVM start-up once.
 *
 *   java -cp 'libs/*' CreateTopics.java BOOTSTRAP PARTITIONS [OPTION...] TOPIC...
 *   java -cp 'libs/*' CreateTopics.java BOOTSTRAP --list
 *   java -cp 'libs/*' CreateTopics.java BOOTSTRAP --describe [TOPIC...]
 *
 * Options (each optional; without them the topics get replication factor 1,
 * the broker's min.insync.replicas, and nothing else is waited for):
 *
 *   --replication-factor N   create the topics with N replicas; a topic that
 *                            exists with another replication factor is an error
 *   --min-insync-replicas N  set min.insync.replicas=N on the topics (also on
 *                            those that exist already)
 *   --brokers N              first wait until N brokers are alive (registered
 *                            and unfenced)
 *   --consumer-offsets       make the group coordinator create __consumer_offsets
 *                            now (a consumer group's first join would otherwise
 *                            need every broker of its replication factor up)
 *   --in-sync                at the end, wait until every partition of the topics
 *                            (and of __consumer_offsets, with --consumer-offsets)
 *                            has a leader and all its replicas in sync
 *   --                       ends the options
 *
 * --describe prints one line per alive broker ("broker ID HOST:PORT") and one
 * per topic (every topic but the internal ones when none is named):
 *
 *   TOPIC partitions=P replication.factor=R min.insync.replicas=M isr.min=I
 *         under.replicated=U no.leader=L
 *
 * (on one line) where R is the least replica count of its partitions, I the
 * least in-sync replica count, U the partitions with fewer in-sync replicas
 * than replicas and L those without a leader; "TOPIC missing" (and exit
 * status 1) for a named topic that does not exist.
 *
 * It waits for the broker (up to PL_STACK_TIMEOUT seconds, default 90) and
 * retries retriable errors, so the script can call it while the broker is
 * still starting. A topic that already exists counts as success. Exit status
 * is 0 on success, 1 on a timeout or a non-retriable error, 2 on bad usage.
 */

import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.CreateTopicsResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.InvalidReplicationFactorException;
import org.apache.kafka.common.errors.RetriableException;
import org.apache.kafka.common.errors.TopicExistsException;

public class CreateTopics {
    private static final long POLL_MS = 250;
    private static final String OFFSETS_TOPIC = "__consumer_offsets";
    private static final String MIN_ISR = "min.insync.replicas";

    /* The options of the create form. */
    private static int replicationFactor = 0;   /* 0: not given (1) */
    private static int minInsync = 0;           /* 0: not given */
    private static int brokers = 1;
    private static boolean consumerOffsets = false;
    private static boolean inSync = false;

    private static void usage() {
        System.err.println("usage: CreateTopics BOOTSTRAP PARTITIONS [--replication-factor N]"
                + " [--min-insync-replicas N] [--brokers N] [--consumer-offsets] [--in-sync]"
                + " [--] TOPIC...");
        System.err.println("       CreateTopics BOOTSTRAP --list");
        System.err.println("       CreateTopics BOOTSTRAP --describe [TOPIC...]");
        System.exit(2);
    }

    private static int positive(String what, String s) {
        int n;
        try {
            n = Integer.parseInt(s);
        } catch (NumberFormatException e) {
            n = 0;
        }
        if (n < 1) {
            System.err.println("CreateTopics: " + what + " must be a positive integer, got '"
                    + s + "'");
            System.exit(2);
        }
        return n;
    }

    public static void main(String[] args) throws InterruptedException {
        if (args.length < 2) {
            usage();
        }
        String bootstrap = args[0];
        boolean list = args[1].equals("--list");
        boolean describe = args[1].equals("--describe");
        int partitions = 0;
        int first = 2;          /* the first topic name */
        if (!list && !describe) {
            partitions = positive("PARTITIONS", args[1]);
            for (; first < args.length && args[first].startsWith("--"); first++) {
                String opt = args[first];
                if (opt.equals("--")) {
                    first++;
                    break;
                } else if (opt.equals("--consumer-offsets")) {
                    consumerOffsets = true;
                } else if (opt.equals("--in-sync")) {
                    inSync = true;
                } else if (first + 1 < args.length && opt.equals("--replication-factor")) {
                    replicationFactor = positive(opt, args[++first]);
                } else if (first + 1 < args.length && opt.equals("--min-insync-replicas")) {
                    minInsync = positive(opt, args[++first]);
                } else if (first + 1 < args.length && opt.equals("--brokers")) {
                    brokers = positive(opt, args[++first]);
                } else {
                    System.err.println("CreateTopics: unknown option or missing value: " + opt);
                    usage();
                }
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
            waitForBroker(admin, bootstrap, brokers, deadline);
            List<String> topics = List.of(args).subList(first, args.length);
            if (list) {
                rc = listTopics(admin);
            } else if (describe) {
                rc = describeTopics(admin, topics);
            } else {
                rc = createTopics(admin, partitions, topics, deadline);
                if (rc == 0 && consumerOffsets) {
                    createOffsetsTopic(admin, deadline);
                }
                if (rc == 0 && inSync) {
                    List<String> all = new ArrayList<>(topics);
                    if (consumerOffsets) {
                        all.add(OFFSETS_TOPIC);
                    }
                    rc = waitInSync(admin, all, deadline);
                }
            }
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

    private static long waitMs(long deadline) {
        return Math.min(5000, Math.max(1, remainingMs(deadline)));
    }

    /* Waits until the broker answers a metadata request with at least
     * `wanted` live nodes. */
    private static void waitForBroker(Admin admin, String bootstrap, int wanted, long deadline)
            throws InterruptedException, TimeoutException {
        Throwable last = null;
        int seen = 0;
        while (remainingMs(deadline) > 0) {
            try {
                seen = admin.describeCluster().nodes()
                        .get(waitMs(deadline), TimeUnit.MILLISECONDS).size();
                if (seen >= wanted) {
                    return;
                }
            } catch (ExecutionException | TimeoutException e) {
                last = e instanceof ExecutionException ? e.getCause() : e;
            }
            Thread.sleep(POLL_MS);
        }
        if (wanted > 1 && seen > 0) {
            throw new TimeoutException("only " + seen + " of " + wanted + " brokers of "
                    + bootstrap + " are alive");
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
            throws InterruptedException, TimeoutException, ExecutionException {
        List<String> todo = new ArrayList<>(topics);
        List<String> existing = new ArrayList<>();
        Throwable last = null;
        short rf = (short) Math.max(1, replicationFactor);
        String suffix = replicationFactor == 0 ? ""
                : ", replication factor " + replicationFactor;
        Map<String, String> configs = new HashMap<>();
        if (minInsync > 0) {
            configs.put(MIN_ISR, Integer.toString(minInsync));
            suffix += ", " + MIN_ISR + " " + minInsync;
        }
        while (!todo.isEmpty()) {
            if (remainingMs(deadline) <= 0) {
                throw new TimeoutException("could not create " + todo
                        + (last == null ? "" : ": " + last));
            }
            List<NewTopic> wanted = new ArrayList<>();
            for (String t : todo) {
                wanted.add(new NewTopic(t, partitions, rf).configs(configs));
            }
            CreateTopicsResult result = admin.createTopics(wanted);
            List<String> retry = new ArrayList<>();
            for (Map.Entry<String, KafkaFuture<Void>> e : result.values().entrySet()) {
                try {
                    e.getValue().get();
                    System.out.println("created " + e.getKey() + " (" + partitions
                            + " partitions" + suffix + ")");
                } catch (ExecutionException ex) {
                    Throwable cause = ex.getCause();
                    if (cause instanceof TopicExistsException) {
                        System.out.println("exists  " + e.getKey());
                        existing.add(e.getKey());
                    } else if (cause instanceof RetriableException
                            || (cause instanceof InvalidReplicationFactorException
                                && replicationFactor > 0)) {
                        /* (a broker just registered may not count yet) */
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
        if (existing.isEmpty()) {
            return 0;
        }
        if (replicationFactor > 0) {
            Map<String, TopicDescription> d = describe(admin, existing, deadline);
            for (String t : existing) {
                int have = replicaCount(d.get(t));
                if (have != replicationFactor) {
                    System.err.println("CreateTopics: " + t + " exists with replication factor "
                            + have + ", not " + replicationFactor
                            + " (delete the data, or the topic, to recreate it)");
                    return 1;
                }
            }
        }
        if (minInsync > 0) {
            Map<ConfigResource, Collection<AlterConfigOp>> ops = new HashMap<>();
            for (String t : existing) {
                ops.put(new ConfigResource(ConfigResource.Type.TOPIC, t),
                        List.of(new AlterConfigOp(
                                new ConfigEntry(MIN_ISR, Integer.toString(minInsync)),
                                AlterConfigOp.OpType.SET)));
            }
            admin.incrementalAlterConfigs(ops).all()
                    .get(waitMs(deadline), TimeUnit.MILLISECONDS);
        }
        return 0;
    }

    /* A FindCoordinator request makes the broker create __consumer_offsets. */
    private static void createOffsetsTopic(Admin admin, long deadline)
            throws InterruptedException, TimeoutException {
        Throwable last = null;
        while (remainingMs(deadline) > 0) {
            try {
                admin.describeConsumerGroups(List.of("pl-stack-create-topics")).all()
                        .get(waitMs(deadline), TimeUnit.MILLISECONDS);
                return;
            } catch (ExecutionException | TimeoutException e) {
                last = e instanceof ExecutionException ? e.getCause() : e;
            }
            Thread.sleep(POLL_MS);
        }
        throw new TimeoutException("the group coordinator did not come up"
                + (last == null ? "" : ": " + last));
    }

    /* Describes the topics, retrying retriable errors (metadata not yet
     * propagated) until the deadline. */
    private static Map<String, TopicDescription> describe(Admin admin, Collection<String> topics,
                                                          long deadline)
            throws InterruptedException, TimeoutException, ExecutionException {
        Throwable last = null;
        while (remainingMs(deadline) > 0) {
            try {
                return admin.describeTopics(topics).allTopicNames()
                        .get(waitMs(deadline), TimeUnit.MILLISECONDS);
            } catch (ExecutionException e) {
                if (!(e.getCause() instanceof RetriableException)) {
                    throw e;
                }
                last = e.getCause();
            } catch (TimeoutException e) {
                last = e;
            }
            Thread.sleep(POLL_MS);
        }
        throw new TimeoutException("could not describe " + topics
                + (last == null ? "" : ": " + last));
    }

    private static int replicaCount(TopicDescription d) {
        int n = Integer.MAX_VALUE;
        for (TopicPartitionInfo p : d.partitions()) {
            n = Math.min(n, p.replicas().size());
        }
        return n == Integer.MAX_VALUE ? 0 : n;
    }

    private static boolean hasLeader(TopicPartitionInfo p) {
        return p.leader() != null && !p.leader().isEmpty();
    }

    /* Waits until every partition of the topics has a leader and every
     * replica in its ISR. */
    private static int waitInSync(Admin admin, List<String> topics, long deadline)
            throws InterruptedException, TimeoutException, ExecutionException {
        List<String> lagging = new ArrayList<>();
        while (true) {
            lagging.clear();
            Map<String, TopicDescription> d = describe(admin, topics, deadline);
            for (String t : topics) {
                for (TopicPartitionInfo p : d.get(t).partitions()) {
                    if (!hasLeader(p) || p.isr().size() < p.replicas().size()) {
                        lagging.add(t + "-" + p.partition() + " (isr " + ids(p.isr())
                                + " of " + ids(p.replicas()) + ")");
                    }
                }
            }
            if (lagging.isEmpty()) {
                System.out.println("in sync " + topics.size() + " topics");
                return 0;
            }
            if (remainingMs(deadline) <= 0) {
                throw new TimeoutException("partitions not in sync in time: "
                        + String.join(", ", lagging));
            }
            Thread.sleep(POLL_MS);
        }
    }

    private static String ids(List<Node> nodes) {
        List<String> s = new ArrayList<>();
        for (Node n : nodes) {
            s.add(Integer.toString(n.id()));
        }
        return "[" + String.join(",", s) + "]";
    }

    private static int describeTopics(Admin admin, List<String> named)
            throws InterruptedException, ExecutionException, TimeoutException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(timeoutSeconds());
        TreeMap<Integer, Node> live = new TreeMap<>();
        for (Node n : admin.describeCluster().nodes().get()) {
            live.put(n.id(), n);
        }
        for (Node n : live.values()) {
            System.out.println("broker " + n.id() + " " + n.host() + ":" + n.port());
        }
        TreeSet<String> exist = new TreeSet<>(admin.listTopics().names().get());
        List<String> topics = new ArrayList<>(named.isEmpty() ? exist : named);
        int rc = 0;
        for (String t : named) {
            if (!exist.contains(t)) {
                System.out.println(t + " missing");
                topics.remove(t);
                rc = 1;
            }
        }
        if (topics.isEmpty()) {
            return rc;
        }
        Map<String, TopicDescription> d = describe(admin, topics, deadline);
        List<ConfigResource> res = new ArrayList<>();
        for (String t : topics) {
            res.add(new ConfigResource(ConfigResource.Type.TOPIC, t));
        }
        Map<ConfigResource, Config> configs = admin.describeConfigs(res).all().get();
        for (String t : topics) {
            TopicDescription td = d.get(t);
            int isrMin = Integer.MAX_VALUE, under = 0, noLeader = 0;
            for (TopicPartitionInfo p : td.partitions()) {
                isrMin = Math.min(isrMin, p.isr().size());
                if (p.isr().size() < p.replicas().size()) {
                    under++;
                }
                if (!hasLeader(p)) {
                    noLeader++;
                }
            }
            ConfigEntry minIsr = configs.get(new ConfigResource(ConfigResource.Type.TOPIC, t))
                    .get(MIN_ISR);
            System.out.println(t + " partitions=" + td.partitions().size()
                    + " replication.factor=" + replicaCount(td)
                    + " " + MIN_ISR + "=" + (minIsr == null ? "?" : minIsr.value())
                    + " isr.min=" + (isrMin == Integer.MAX_VALUE ? 0 : isrMin)
                    + " under.replicated=" + under + " no.leader=" + noLeader);
        }
        return rc;
    }
}
