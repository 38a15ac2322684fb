"""Cluster DNS: the zone built purely from a Cluster (zone, lookup), the packed-answer table of the fast
path (answers, pack, wire), forwarding (forward), CoreDNS-named metrics (metrics), the server (server)."""
