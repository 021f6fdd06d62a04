package org.neurflow.stack;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import org.neo4j.configuration.Config;
import org.neo4j.configuration.GraphDatabaseSettings;
import org.neo4j.configuration.connectors.BoltConnector;
import org.neo4j.configuration.connectors.BoltConnectorInternalSettings;
import org.neo4j.configuration.helpers.SocketAddress;
import org.neo4j.dbms.api.DatabaseManagementService;
import org.neo4j.dbms.api.DatabaseManagementServiceBuilder;
import org.neo4j.io.ByteUnit;
import org.neo4j.io.fs.DefaultFileSystemAbstraction;
import org.neo4j.kernel.impl.security.User;
import org.neo4j.logging.NullLogProvider;
import org.neo4j.memory.EmptyMemoryTracker;
import org.neo4j.server.configuration.ServerSettings;
import org.neo4j.server.security.SecureHasher;
import org.neo4j.server.security.SystemGraphCredential;
import org.neo4j.server.security.auth.CommunitySecurityModule;
import org.neo4j.server.security.auth.FileUserRepository;

/**
 * Runs Neo4j Community embedded, with authentication and a Bolt connector (which also accepts
 * WebSocket, for Neo4j Browser), until the JVM gets SIGTERM.
 *
 * <p>Usage: {@code Neo4jLauncher HOME_DIR HOST PORT PAGECACHE}. The password of user {@code neo4j}
 * comes from the environment variable {@code NEURFLOW_NEO4J_PASSWORD}, never from the command line.
 * On a fresh database it is written as the initial password (the mechanism behind {@code neo4j-admin
 * dbms set-initial-password}) before Bolt opens, so the default password is never reachable; on an
 * existing database it is applied with ALTER USER, so the environment stays the source of truth.
 */
public final class Neo4jLauncher {
  private static final String USER = "neo4j";
  private static final Duration SHUTDOWN_WAIT = Duration.ofSeconds(1);

  /**
   * Hosts Neo4j Browser may fetch guides ({@code :play URL}) and styles ({@code :style URL}) from;
   * Browser reads it with {@code CALL dbms.clientConfig()}. Neo4j's default names only {@code
   * localhost}, not {@code 127.0.0.1}, where the stack serves the NeurFlow guide.
   */
  private static final String BROWSER_CONTENT_HOSTS = "guides.neo4j.com,localhost,127.0.0.1";

  private Neo4jLauncher() {}

  public static void main(String[] args) throws Exception {
    if (args.length != 5) {
      System.err.println("usage: Neo4jLauncher HOME_DIR HOST PORT PAGECACHE TX_LOG_RETENTION");
      System.exit(2);
    }
    Path home = Path.of(args[0]).toAbsolutePath();
    String host = args[1];
    int port = Integer.parseInt(args[2]);
    String pagecache = args[3];
    String txLogRetention = args[4];
    String password = System.getenv("NEURFLOW_NEO4J_PASSWORD");
    if (password == null || password.isEmpty()) {
      System.err.println("NEURFLOW_NEO4J_PASSWORD is not set; refusing to start without a password");
      System.exit(2);
    }

    boolean fresh = !Files.isDirectory(home.resolve("data/databases/system"));
    if (fresh) {
      writeInitialPassword(home, password);
    }

    long started = System.nanoTime();
    DatabaseManagementService dbms;
    try {
      dbms =
          new DatabaseManagementServiceBuilder(home)
              .setConfig(GraphDatabaseSettings.auth_enabled, true)
              .setConfig(BoltConnector.enabled, true)
              .setConfig(BoltConnector.listen_address, new SocketAddress(host, port))
              .setConfig(BoltConnector.advertised_address, new SocketAddress(host, port))
              .setConfig(BoltConnector.encryption_level, BoltConnector.EncryptionLevel.DISABLED)
              .setConfig(GraphDatabaseSettings.pagecache_memory, ByteUnit.parse(pagecache))
              .setConfig(GraphDatabaseSettings.preallocate_logical_logs, false)
              // Bounded transaction logs: Neo4j keeps two days of them by default, which is
              // gigabytes after a campaign. Only whole files beyond the retention are pruned, and
              // only at a checkpoint (every 15 min by default; the volume policy is Enterprise):
              // smaller files and a checkpoint every 30 s keep the overshoot to what 30 s of
              // writing logs (about 0.5 GB at the writer's full speed).
              .setConfig(GraphDatabaseSettings.keep_logical_logs, txLogRetention)
              .setConfig(GraphDatabaseSettings.logical_log_rotation_threshold, 64L * 1024 * 1024)
              .setConfig(GraphDatabaseSettings.check_point_interval_time, Duration.ofSeconds(30))
              .setConfig(
                  ServerSettings.browser_remote_content_hostname_whitelist, BROWSER_CONTENT_HOSTS)
              // Bolt waits 5 s + 5 s for idle connections and threads on shutdown; a local
              // single-user server does not need that, and `down` should be quick.
              .setConfig(BoltConnectorInternalSettings.connection_shutdown_wait_time, SHUTDOWN_WAIT)
              .setConfig(BoltConnectorInternalSettings.thread_pool_shutdown_wait_time, SHUTDOWN_WAIT)
              .build();
    } catch (RuntimeException e) {
      fail("could not start Neo4j in " + home, e);
      return;
    }
    CountDownLatch stopped = new CountDownLatch(1);
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  System.out.println("neurflow-neo4j: shutting down");
                  dbms.shutdown();
                  stopped.countDown();
                  System.out.println("neurflow-neo4j: stopped");
                }));
    try {
      if (!fresh) {
        applyPassword(dbms, password);
      }
      dbms.database(GraphDatabaseSettings.DEFAULT_DATABASE_NAME)
          .executeTransactionally("RETURN 1");
    } catch (RuntimeException e) {
      fail("Neo4j started but could not be prepared", e);
    }
    System.out.printf(
        "neurflow-neo4j: ready on bolt://%s:%d (fresh database: %s, %.1f s)%n",
        host, port, fresh, (System.nanoTime() - started) / 1e9);
    stopped.await();
  }

  /** Exit non-zero: Neo4j's own threads would otherwise keep a half-started JVM alive. */
  private static void fail(String what, Throwable cause) {
    System.err.println("neurflow-neo4j: " + what + ": " + cause);
    cause.printStackTrace();
    System.exit(1);
  }

  private static void writeInitialPassword(Path home, String password) throws Exception {
    Config config = Config.newBuilder().set(GraphDatabaseSettings.neo4j_home, home).build();
    Path authFile = CommunitySecurityModule.getInitialUserRepositoryFile(config);
    try (var fs = new DefaultFileSystemAbstraction()) {
      fs.mkdirs(authFile.getParent());
      if (fs.fileExists(authFile)) {
        fs.deleteFile(authFile);
      }
      var repo =
          new FileUserRepository(
              fs, authFile, NullLogProvider.getInstance(), EmptyMemoryTracker.INSTANCE);
      repo.start();
      var credential =
          SystemGraphCredential.createCredentialForPassword(
              password.getBytes(java.nio.charset.StandardCharsets.UTF_8), new SecureHasher());
      repo.create(new User(USER, null, credential, false, false));
      repo.shutdown();
    }
  }

  private static void applyPassword(DatabaseManagementService dbms, String password) {
    try {
      dbms.database(GraphDatabaseSettings.SYSTEM_DATABASE_NAME)
          .executeTransactionally(
              "ALTER USER " + USER + " SET PASSWORD $password CHANGE NOT REQUIRED",
              Map.of("password", password));
    } catch (RuntimeException e) {
      String message = String.valueOf(e.getMessage());
      if (!message.contains("Old password and new password cannot be the same")) {
        throw e;
      }
    }
  }
}
