"""The fast path's side of each event's connection (client or server, from the connection's first step), which
the "Remote endpoints ... by service" table keys on and the export writes: the connection found as the Python
path finds it (aggregate.py: by socket address, else by addresses; a CLOSE ends one; a SYN_SENT line without a
local port joined to the next new connection of the same process and remote end).

Per connection key, not per event: most keys hold one connection (no line but the last ends one), whose side
an aggregate gives (`conns`); window sorts only for the lines of the keys that hold more (`segs`: a reused
address, few) and for the lines that may pass a side on (SYN_SENT without a local port, and each connection's
first line: `pend`). The remote endpoints table then counts the events by key and endpoint first and joins the
sides to those groups: no table or join of every event (which held most of the 10M report's time and memory).
"""

EST = "kind = 1 AND news = 1"  # an event that establishes a connection
HEURISTIC = ("CASE WHEN 0 < sport AND sport < 32768 AND 32768 <= dport OR 0 < sport AND sport < 1024 AND 1024 <= dport "
             "THEN 'server' ELSE 'client' END")
ENDPOINT = "CASE WHEN fam = 6 THEN '[' || {0} || ']:' || {1} ELSE {0} || ':' || {1} END"

# a side as a number in the order of its name (max() of sides as of names): 1 client, 2 none, 3 server
# every event with its connection key (by socket address; a reset answering no socket is a connection of its
# own; a SYN_SENT line without a local port by process and remote end; else by the addresses), hashed on the
# fields the endpoints are made of (the same equality as the endpoints' texts, without making them)
EV_KEY = f"""CREATE VIEW ev_key AS SELECT n, host, fam, dst, sport, dport, {EST} AS est, ct, kind = 1 AND news = 7 AS close,
  hash(host, ct, CASE WHEN ct = 1 THEN hash(sock) WHEN ct = 2 THEN hash(n) WHEN ct = 3 THEN hash(fam, dst, dport, pid)
    ELSE hash(fam, src, sport, dst, dport) END) AS key, hash(host, fam, dst, dport, pid) AS hrp,
  coalesce((kind = 1 AND news = 7) OR (kind <> 1 AND news IN (6, 12)), false) AS ends,
  (CASE WHEN kind = 1 AND news = 2 THEN 1 WHEN kind = 1 AND news IN (3, 12) THEN 3 ELSE 2 END)::UTINYINT AS sideof
FROM (SELECT *, CASE WHEN sock IS NOT NULL THEN 1 WHEN news = 0 THEN 2 WHEN sport = 0 THEN 3 ELSE 4 END AS ct FROM ev)"""
# per key: its first line and that line's side; inner_ends > 0: a line before the last ends a connection
CONNS = """CREATE TABLE conns AS SELECT key, min(ct) AS ct, min(n) AS first, arg_min(sideof, n) AS side_first,
  arg_min(hrp, n) AS hrp1, sum(ends::INT) - arg_max(ends::INT, n) AS inner_ends FROM ev_key GROUP BY key"""
# the lines of the keys that hold more than one connection: each its connection (seg: the lines before it that end
# one), whether it starts one, and that connection's side. Fixed-size columns only (the host and the remote
# address by their hash, eph; their texts from MANY_NAMES): a window sort holds its rows' strings outside the
# memory limit (at 10M JSON lines, most of them sockets reused, that ran out of memory)
SEGS = """CREATE TABLE segs AS SELECT *, first_value(sideof) OVER (PARTITION BY key, seg ORDER BY n) AS side0 FROM (
  SELECT k.n, k.key, k.hrp, k.ct, k.close, k.ends, k.sideof, k.est, k.fam, k.sport, k.dport, hash(k.host, k.dst) AS eph,
    coalesce(lag(ends) OVER w, true) AS starts,
    coalesce(sum(ends::INT) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)::HUGEINT AS seg
  FROM ev_key k SEMI JOIN (SELECT key FROM conns WHERE inner_ends > 0) USING (key)
  WINDOW w AS (PARTITION BY key ORDER BY n))"""
MANY_NAMES = """SELECT key, hash(host, dst) AS eph, any_value(host) AS host, any_value(dst) AS dst FROM ev_key
  SEMI JOIN (SELECT key FROM conns WHERE inner_ends > 0) USING (key) GROUP BY ALL"""
# a connection by addresses that starts right after a SYN_SENT line without a local port of the same process and
# remote end (no other such start between) takes that line's side: (key, seg, side), where one does
PEND = """CREATE TABLE pend AS SELECT key, seg, max(pend) AS pend FROM (
  SELECT key, seg, ct = 4 AS t, lag(CASE WHEN ct = 3 AND NOT close THEN side0 END) OVER (PARTITION BY hrp ORDER BY n)
    AS pend FROM (
    SELECT k.n, k.hrp, k.key, 0::HUGEINT AS seg, 3 AS ct, k.close, c.side_first AS side0
      FROM ev_key k JOIN conns c USING (key) WHERE k.ct = 3 AND c.ct = 3 AND c.inner_ends = 0
    UNION ALL SELECT first, hrp1, key, 0::HUGEINT, 4, false, side_first FROM conns WHERE ct = 4 AND inner_ends = 0
    UNION ALL SELECT n, hrp, key, seg, ct, close, side0 FROM segs WHERE ct = 3 OR ct = 4 AND starts))
WHERE t GROUP BY key, seg HAVING max(pend) IS NOT NULL"""
# the side of what ({0}, of ev_key: grouped by key for the one-connection keys; {1}: the others' rows of segs
# with their key, seg and side0, or groups of them)
SIDED = """SELECT g.*, coalesce(p.pend, c.side_first) AS side1 FROM ({0} FROM ev_key GROUP BY ALL) g
  JOIN conns c USING (key) LEFT JOIN pend p ON p.key = g.key AND p.seg = 0 WHERE c.inner_ends = 0
UNION ALL BY NAME SELECT g.* EXCLUDE (seg, side0), coalesce(p.pend, g.side0) AS side1
  FROM ({1}) g LEFT JOIN pend p USING (key, seg)"""
SIDE = f"CASE side1 WHEN 1 THEN 'client' WHEN 3 THEN 'server' ELSE {HEURISTIC} END"
# the remote endpoints by service: the events counted by key and endpoint, then by (side, address, port), the
# endpoints' texts made for those groups alone (a server's remote end without its port: 'ADDR:*')
REMOTES = f"""SELECT host, CASE WHEN cl THEN {ENDPOINT.format('dst', 'port')} ELSE {ENDPOINT.format('dst', "'*'")} END AS ep,
  CASE WHEN cl THEN 'remote' ELSE 'local' END AS s, port, c, e, f
FROM (SELECT host, cl, fam, dst, CASE WHEN cl THEN dport ELSE sport END AS port, sum(c)::BIGINT AS c,
    sum(e)::BIGINT AS e, min(f) AS f
  FROM (SELECT *, {SIDE} = 'client' AS cl FROM ({SIDED.format(
    "SELECT key, host, fam, dst, sport, dport, count(*) AS c, count(*) FILTER (est) AS e, min(n) AS f",
    f"SELECT * EXCLUDE (eph) FROM (SELECT key, eph, fam, sport, dport, seg, count(*) AS c, count(*) FILTER (est) AS e, "
    f"min(n) AS f, any_value(side0) AS side0 FROM segs GROUP BY key, eph, fam, sport, dport, seg) "
    f"JOIN ({MANY_NAMES}) USING (key, eph)")}))
  GROUP BY ALL)"""
# each event's side (the export writes it): no more than the tables above, joined to the events
EV_SIDE = f"""CREATE VIEW ev_side AS SELECT ev.*, {SIDE} AS side FROM ev JOIN ({SIDED.format('SELECT key, n', 'SELECT key, n, seg, side0 FROM segs')}) USING (n)"""


def prepare(con):
    """The view ev_key and the tables conns, segs and pend, from the view ev."""
    for statement in (EV_KEY, CONNS, SEGS, PEND):
        con.execute(statement)


def event_sides(con):
    """The view ev_side: ev with each event's side."""
    con.execute(EV_SIDE)
