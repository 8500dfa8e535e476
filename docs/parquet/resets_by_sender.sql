-- Connections ended by a reset, by who sent it (the report's "Resets by who sent them"), per host
SELECT host, result, count(*) AS conns
FROM connections
WHERE result IN ('reset-sent', 'reset-received')
GROUP BY host, result
ORDER BY host, result
