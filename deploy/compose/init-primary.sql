-- Accounts exist on every server already (the replicas create them too):
-- keep them out of the binlog, or the replicas would replay them and stop
-- on error 1396.
SET sql_log_bin = 0;
CREATE USER 'app'@'%' IDENTIFIED BY 'app-secret';
GRANT ALL ON *.* TO 'app'@'%';
CREATE USER 'concord'@'%' IDENTIFIED BY 'monitor-secret';
GRANT ALL ON *.* TO 'concord'@'%';
CREATE USER 'repl'@'%' IDENTIFIED BY 'repl-secret';
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';
