-- Slowest handshakes (the report's "Slowest handshakes"), microseconds
SELECT host, local, remote, pid, comm, handshake_us
FROM connections
WHERE handshake_us IS NOT NULL
ORDER BY handshake_us DESC, ts_ns
LIMIT 10
