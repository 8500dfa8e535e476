-- Top processes by bytes (the report's "Top processes by bytes"), per host
SELECT host, pid, comm, sum(bytes_sent) AS sent, sum(bytes_received) AS received, count(*) AS conns
FROM connections
GROUP BY host, pid, comm
ORDER BY host, sent + received DESC, conns DESC, pid, comm
LIMIT 10
