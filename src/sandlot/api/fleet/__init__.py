"""A fleet: many node daemons behind stateless API replicas (see fleet.py)."""
