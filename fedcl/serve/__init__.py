"""The shop's recommendation service (python -m fedcl.serve): snapshots, lists, events."""
