"""Reliability and security tests: properties, hostile upstreams, outages, kills and leak scans (issue 4)."""
