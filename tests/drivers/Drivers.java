import java.sql.*;
import java.util.*;

/**
 * MariaDB Connector/J against one endpoint, in three configurations;
 * one line per step (see tests/drivers.rs).
 * Usage: java -cp .:mariadb-java-client.jar Drivers PORT PASSWORD
 */
public class Drivers {
  interface Step { Object run() throws Exception; }

  static void step(String n, Step f) {
    try {
      System.out.println("ok | " + n + " | " + f.run());
    } catch (SQLException e) {
      System.out.println("ERR | " + n + " | " + e.getErrorCode() + " " + e.getSQLState());
    } catch (Exception e) {
      System.out.println("ERR | " + n + " | " + e.getClass().getSimpleName());
    }
  }

  public static void main(String[] a) throws Exception {
    String[][] configs = {
      {"plain", ""},
      {"server", "&useServerPrepStmts=true&useBulkStmts=true&cachePrepStmts=true"},
      {"compress", "&useServerPrepStmts=true&useBatchMultiSend=true&useCompression=true"},
    };
    for (String[] cfg : configs) {
      String tag = cfg[0];
      String url = "jdbc:mariadb://127.0.0.1:" + a[0] + "/test?user=app&password=" + a[1] + "&allowMultiQueries=true" + cfg[1];
      try (Connection c = DriverManager.getConnection(url)) {
        String t = "drv_j_" + tag;
        step(tag + " create", () -> c.createStatement().executeUpdate("CREATE TABLE " + t + " (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(50), n INT NULL)"));
        step(tag + " batch", () -> {
          PreparedStatement p = c.prepareStatement("INSERT INTO " + t + " (v, n) VALUES (?, ?)");
          for (int i = 0; i < 20; i++) {
            p.setString(1, "b" + i);
            if (i % 3 == 0) p.setNull(2, Types.INTEGER); else p.setInt(2, i);
            p.addBatch();
          }
          return p.executeBatch().length;
        });
        step(tag + " keys", () -> {
          PreparedStatement p = c.prepareStatement("INSERT INTO " + t + " (v) VALUES (?)", Statement.RETURN_GENERATED_KEYS);
          p.setString(1, "k");
          p.executeUpdate();
          ResultSet r = p.getGeneratedKeys();
          r.next();
          return r.getLong(1);
        });
        step(tag + " select", () -> {
          PreparedStatement p = c.prepareStatement("SELECT COUNT(*), SUM(n) FROM " + t + " WHERE v LIKE ?");
          p.setString(1, "b%");
          ResultSet r = p.executeQuery();
          r.next();
          return r.getLong(1) + "," + r.getLong(2);
        });
        step(tag + " txn", () -> {
          c.setAutoCommit(false);
          c.createStatement().execute("INSERT INTO " + t + " (v) VALUES ('t')");
          c.rollback();
          c.setAutoCommit(true);
          ResultSet r = c.createStatement().executeQuery("SELECT COUNT(*) FROM " + t + " WHERE v = 't'");
          r.next();
          return r.getLong(1);
        });
        step(tag + " multi", () -> {
          Statement s = c.createStatement();
          s.execute("SELECT 1; SELECT 2");
          List<Long> o = new ArrayList<>();
          do {
            ResultSet r = s.getResultSet();
            if (r != null) { r.next(); o.add(r.getLong(1)); }
          } while (s.getMoreResults() || s.getUpdateCount() != -1);
          return o;
        });
        step(tag + " dup", () -> c.createStatement().execute("INSERT INTO " + t + " (id) VALUES (1)"));
        step(tag + " isolation", () -> {
          c.setTransactionIsolation(Connection.TRANSACTION_SERIALIZABLE);
          ResultSet r = c.createStatement().executeQuery("SELECT @@tx_isolation");
          r.next();
          String s = r.getString(1);
          c.setTransactionIsolation(Connection.TRANSACTION_REPEATABLE_READ);
          return s;
        });
        step(tag + " read only", () -> {
          c.setReadOnly(true);
          ResultSet r = c.createStatement().executeQuery("SELECT COUNT(*) FROM " + t);
          r.next();
          c.setReadOnly(false);
          return r.getLong(1);
        });
        step(tag + " valid", () -> c.isValid(2));
        step(tag + " 17 MiB", () -> {
          PreparedStatement p = c.prepareStatement("SELECT LENGTH(?)");
          p.setString(1, "x".repeat(17 << 20));
          ResultSet r = p.executeQuery();
          r.next();
          return r.getLong(1);
        });
        step(tag + " query timeout", () -> {
          Statement s = c.createStatement();
          s.setQueryTimeout(1);
          s.execute("SELECT SLEEP(3)");
          ResultSet r = s.getResultSet();
          r.next();
          return r.getLong(1);
        });
        step(tag + " after timeout", () -> {
          ResultSet r = c.createStatement().executeQuery("SELECT 42");
          r.next();
          return r.getLong(1);
        });
      } catch (SQLException e) {
        System.out.println("FATAL | " + tag + " | " + e.getErrorCode() + " " + e.getSQLState());
      }
    }
  }
}
