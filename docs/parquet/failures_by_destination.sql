-- Failed connections by destination (the report's "Failed connections by destination"), per host
SELECT host, remote, count(*) AS failed
FROM connections
WHERE result <> 'closed'
GROUP BY host, remote
ORDER BY host, failed DESC, remote
LIMIT 10
