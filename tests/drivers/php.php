<?php
// PHP's mysqlnd drivers (mysqli, PDO) against one endpoint; one line per
// step (see tests/drivers.rs). Usage: php php.php PORT PASSWORD
$port = (int)$argv[1]; $pw = $argv[2];
mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);
function step($n, $f) {
  try { $r = json_encode($f()); echo "ok | $n | $r\n"; }
  catch (Throwable $e) { echo "ERR | $n | ", $e->getCode(), "\n"; }
}
$m = new mysqli('127.0.0.1', 'app', $pw, 'test', $port);
step('mi create', fn() => $m->query('CREATE TABLE drv_php (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(50), b MEDIUMBLOB)'));
step('mi long data', function() use ($m) { $s = $m->prepare('INSERT INTO drv_php (v, b) VALUES (?, ?)'); $v = 'p'; $b = null; $s->bind_param('sb', $v, $b); $s->send_long_data(1, str_repeat('z', 100000)); $s->send_long_data(1, 'end'); $s->execute(); return [$s->affected_rows, $s->insert_id]; });
step('mi select', function() use ($m) { $s = $m->prepare('SELECT v, LENGTH(b), RIGHT(b, 3) FROM drv_php WHERE id = ?'); $id = 1; $s->bind_param('i', $id); $s->execute(); return $s->get_result()->fetch_all(); });
step('mi multi', function() use ($m) { $m->multi_query('SELECT 1; SELECT 2; SELECT 3'); $o = []; do { if ($r = $m->store_result()) { $o[] = $r->fetch_all(); $r->free(); } } while ($m->more_results() && $m->next_result()); return $o; });
step('mi txn', function() use ($m) { $m->begin_transaction(); $m->query("INSERT INTO drv_php (v) VALUES ('t')"); $m->rollback(); return $m->query("SELECT COUNT(*) FROM drv_php WHERE v = 't'")->fetch_all(); });
step('mi dup', fn() => $m->query('INSERT INTO drv_php (id) VALUES (1)'));
step('mi change user', function() use ($m, $pw) { $m->query('SET @x = 1'); $m->change_user('app', $pw, 'test'); return $m->query('SELECT DATABASE(), @x')->fetch_all(); });
step('mi ping', fn() => $m->ping());
step('mi same id', fn() => $m->thread_id == $m->query('SELECT CONNECTION_ID()')->fetch_row()[0]);
step('mi server', fn() => [$m->server_version, $m->character_set_name()]);
step('mi cursor', function() use ($m) { $m->query("INSERT INTO drv_php (v) VALUES ('c1'), ('c2'), ('c3')"); $s = $m->stmt_init(); $s->prepare('SELECT v FROM drv_php WHERE v LIKE ? ORDER BY id'); $s->attr_set(MYSQLI_STMT_ATTR_CURSOR_TYPE, MYSQLI_CURSOR_TYPE_READ_ONLY); $s->attr_set(MYSQLI_STMT_ATTR_PREFETCH_ROWS, 1); $p = 'c%'; $s->bind_param('s', $p); $s->execute(); $s->bind_result($v); $o = []; while ($s->fetch()) $o[] = $v; return $o; });
$p = new PDO("mysql:host=127.0.0.1;port=$port;dbname=test", 'app', $pw, [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION, PDO::ATTR_EMULATE_PREPARES => false]);
step('pdo prepare', function() use ($p) { $s = $p->prepare('SELECT ? + ? AS s'); $s->execute([1, 2]); return $s->fetchAll(PDO::FETCH_ASSOC); });
step('pdo insert', function() use ($p) { $s = $p->prepare('INSERT INTO drv_php (v) VALUES (?)'); $s->execute(['pdo']); return $p->lastInsertId(); });
step('pdo txn', function() use ($p) { $p->beginTransaction(); $p->exec("INSERT INTO drv_php (v) VALUES ('t2')"); $p->rollBack(); return $p->query("SELECT COUNT(*) FROM drv_php WHERE v = 't2'")->fetchAll(PDO::FETCH_NUM); });
step('pdo dup', fn() => $p->exec('INSERT INTO drv_php (id) VALUES (1)'));
step('pdo unbuffered', function() use ($p) { $p->setAttribute(PDO::MYSQL_ATTR_USE_BUFFERED_QUERY, false); $n = 0; foreach ($p->query('SELECT seq FROM seq_1_to_10000') as $r) $n++; $p->setAttribute(PDO::MYSQL_ATTR_USE_BUFFERED_QUERY, true); return $n; });
step('pdo emulated', function() use ($p) { $p->setAttribute(PDO::ATTR_EMULATE_PREPARES, true); $s = $p->prepare("SELECT ? AS q"); $s->execute(["it's"]); return $s->fetchAll(PDO::FETCH_NUM); });
