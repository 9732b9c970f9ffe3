CREATE USER 'app'@'%' IDENTIFIED BY 'app-secret';
GRANT ALL ON *.* TO 'app'@'%';
CREATE USER 'concord'@'%' IDENTIFIED BY 'monitor-secret';
GRANT ALL ON *.* TO 'concord'@'%';
CREATE USER 'repl'@'%' IDENTIFIED BY 'repl-secret';
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';
