"""Packet tracing: explain a packet's path through a node's rendered rules (pure), or trace a real one.

Explain: cluster_trace.explain_in_cluster (or explain.explain_packet on a parsed ruleset); the result and its
JSON contract in result; text in render_text. Live, in a running lab: live.trace_live, text in render_live.
"""
