"""Servers in namespaces (the user-space DNS server, NSD), started and stopped by process id."""
