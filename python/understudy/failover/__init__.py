"""Failover: directors watch each other (heartbeat) and decide who is primary."""
