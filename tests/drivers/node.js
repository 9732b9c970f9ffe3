// Node.js drivers (mysql2, and mariadb with pipelining) against one
// endpoint; prints one line per step. tests/drivers.rs runs it against
// MariaDB directly and through concord and compares the lines.
// Usage: node node.js PORT PASSWORD
const port = +process.argv[2], password = process.argv[3];
const out = [];
const show = (v) => JSON.stringify(v, (k, x) => (typeof x === 'bigint' ? x.toString() : x));
async function step(name, f) {
  try { out.push(`ok | ${name} | ${show(await f())}`); }
  catch (e) { out.push(`ERR | ${name} | ${e.errno} ${e.sqlState}`); }
}
async function mysql2() {
  const mysql = require('mysql2/promise');
  const c = await mysql.createConnection({host: '127.0.0.1', port, user: 'app', password, database: 'test', multipleStatements: true});
  await step('m2 create', async () => { const [r] = await c.query('CREATE TABLE drv_m2 (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(50), b BLOB, d DATETIME(6), n DECIMAL(10,2) NULL)'); return r.affectedRows; });
  await step('m2 insert', async () => { const [r] = await c.execute('INSERT INTO drv_m2 (v,b,d,n) VALUES (?,?,?,?)', ['héllo', Buffer.from([0, 1, 2, 255]), new Date(0), null]); return [r.insertId, r.affectedRows]; });
  await step('m2 select', async () => (await c.execute('SELECT v, HEX(b) h, n FROM drv_m2 WHERE id = LAST_INSERT_ID()'))[0]);
  await step('m2 multi', async () => (await c.query('SELECT 1 a; SELECT 2 b'))[0]);
  await step('m2 txn', async () => { await c.beginTransaction(); await c.execute('INSERT INTO drv_m2 (v) VALUES (?)', ['t']); const [a] = await c.query("SELECT COUNT(*) n FROM drv_m2 WHERE v = 't'"); await c.rollback(); const [b] = await c.query("SELECT COUNT(*) n FROM drv_m2 WHERE v = 't'"); return [a, b]; });
  await step('m2 dup', () => c.query('INSERT INTO drv_m2 (id, v) VALUES (1, "x")'));
  await step('m2 user var', async () => { await c.query('SET @x = RAND()'); const [a] = await c.query('SELECT @x x'); const [b] = await c.query('SELECT @x x'); return a[0].x === b[0].x; });
  await step('m2 ping', () => c.ping());
  await step('m2 change user', async () => { await c.changeUser({user: 'app', password, database: 'test'}); return (await c.query('SELECT DATABASE() d, @x IS NULL gone'))[0]; });
  await step('m2 executes', async () => { let s = 0; for (let i = 0; i < 100; i++) { const [r] = await c.execute('SELECT ? + ? s', [i, 1]); s += Number(r[0].s); } return s; });
  await step('m2 unprepare', async () => { c.unprepare('SELECT ? + ? s'); return (await c.execute('SELECT ? + ? s', [1, 1]))[0]; });
  await step('m2 17 MiB', async () => (await c.query('SELECT LENGTH(?) l', ['x'.repeat(17 << 20)]))[0]);
  await step('m2 warnings', async () => { await c.query("SELECT CAST('abc' AS SIGNED)"); return (await c.query('SHOW WARNINGS'))[0]; });
  await c.end();
}
async function mariadb() {
  const mariadb = require('mariadb');
  const c = await mariadb.createConnection({host: '127.0.0.1', port, user: 'app', password, database: 'test', multipleStatements: true, pipelining: true});
  await step('ma create', async () => (await c.query('CREATE TABLE drv_ma (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(50), n INT NULL)')).affectedRows);
  await step('ma execute', async () => { const r = await c.execute('INSERT INTO drv_ma (v, n) VALUES (?, ?)', ['a', 1]); return [r.affectedRows, r.insertId]; });
  await step('ma batch', async () => { const r = await c.batch('INSERT INTO drv_ma (v, n) VALUES (?, ?)', [['b', 2], ['c', null], ['d', 4]]); return Array.isArray(r) ? r.length : r.affectedRows; });
  await step('ma select', async () => c.execute('SELECT v, n FROM drv_ma WHERE v IN (?, ?, ?) ORDER BY v', ['b', 'c', 'd']));
  await step('ma pipelined queries', async () => { const ps = []; for (let i = 0; i < 50; i++) ps.push(c.query('SELECT ? x', [i])); return (await Promise.all(ps)).map((r) => Number(r[0].x)).reduce((a, b) => a + b); });
  await step('ma pipelined executes', async () => { const ps = []; for (let i = 0; i < 50; i++) ps.push(c.execute('SELECT ? + 0 x', [i])); return (await Promise.all(ps)).map((r) => Number(r[0].x)).reduce((a, b) => a + b); });
  await step('ma prepare', async () => { const p = await c.prepare('SELECT ? y'); const r = await p.execute([7]); p.close(); return r; });
  await step('ma bad prepare', () => c.execute('SELEKT ?', [1]));
  await step('ma after bad', () => c.execute('SELECT ? + 1 z', [1]));
  await step('ma txn', async () => { await c.beginTransaction(); await c.query("INSERT INTO drv_ma (v) VALUES ('t')"); await c.rollback(); return c.query("SELECT COUNT(*) n FROM drv_ma WHERE v = 't'"); });
  await step('ma reset', async () => { await c.query('SET @y = 1'); await c.reset(); return c.query('SELECT @y y'); });
  await step('ma dup', () => c.query('INSERT INTO drv_ma (id) VALUES (1)'));
  await step('ma ping', () => c.ping());
  await c.end();
}
(async () => {
  try { await mysql2(); } catch (e) { out.push(`FATAL | mysql2 | ${e.message}`); }
  try { await mariadb(); } catch (e) { out.push(`FATAL | mariadb | ${e.message}`); }
  console.log(out.join('\n'));
  process.exit(0);
})();
